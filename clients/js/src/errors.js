// Error classes. A JSON-RPC error from a node keeps its `code` and `data`; errors the
// client finds itself (a bad proof, no majority, every node failed) have their own
// class so an application can tell "the node said no" from "the network is down"
// from "a node lied".

/** JSON-RPC error codes the client acts on (docs/api.md "Errors", SPEC "Sessions"). */
export const CODES = Object.freeze({
  PARSE: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL: -32603,
  BAD_SIGNATURE: -32001,
  BAD_RECORD: -32002,
  TOO_LARGE: -32004,
  RELAY: -32005,
  RATE_LIMITED: -32006,
  ADMIN_ONLY: -32007,
  COOKIE: -32010,
  BEHIND: -32011,
});

export class CirrusError extends Error {
  /** @param {string} message @param {{node?: string, cause?: unknown}} [opts] */
  constructor(message, opts = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    /** URL of the node the error is about, if any. @type {string | undefined} */
    this.node = opts.node;
  }
}

/** A node answered with a JSON-RPC error object. */
export class RpcError extends CirrusError {
  /** @param {number} code @param {string} message @param {unknown} [data] @param {string} [node] */
  constructor(code, message, data, node) {
    super(node ? `${node}: error ${code}: ${message}` : `error ${code}: ${message}`, { node });
    this.code = code;
    this.data = data;
    /** The node's own message, without the prefix. */
    this.rpcMessage = message;
  }

  /** @param {{code: number, message: string, data?: unknown}} e @param {string} [node] */
  static from(e, node) {
    const code = Number(e?.code);
    const message = String(e?.message ?? 'error');
    return code === CODES.BEHIND ? new BehindError(message, e?.data, node) : new RpcError(code, message, e?.data, node);
  }
}

/** -32011: the node does not yet hold every write the session token names. */
export class BehindError extends RpcError {
  /** @param {string} message @param {unknown} data @param {string} [node] */
  constructor(message, data, node) {
    super(CODES.BEHIND, message, data, node);
    /** How many writes of the session the node is missing. @type {number | undefined} */
    this.missing = /** @type {any} */ (data)?.missing;
  }
}

/** The node could not be reached, closed the connection, or sent something that is not JSON-RPC. */
export class TransportError extends CirrusError {}

/** No answer within the timeout. */
export class TimeoutError extends TransportError {}

/**
 * A record breaks a SPEC rule (checked before signing or on what a node returned).
 * `code` is the one a node would answer: -32002 for limits, -32001 for the signature.
 */
export class RecordError extends CirrusError {
  /** @param {string} message @param {number} [code] */
  constructor(message, code = CODES.BAD_RECORD) {
    super(message);
    this.code = code;
  }
}

/** A Merkle proof does not check out (docs/merkle.md "Proofs"). */
export class ProofError extends CirrusError {}

/** A node served data that fails a check: bad proof, bad signature, wrong record. */
export class VerificationError extends CirrusError {}

/** A verified read found no strict majority among the nodes asked. */
export class SplitError extends CirrusError {
  /**
   * @param {string} message
   * @param {Record<string, string[]>} roots root -> nodes that reported it
   * @param {{node: string, error: string}[]} unresponsive
   * @param {number} asked
   */
  constructor(message, roots, unresponsive, asked) {
    super(message);
    this.roots = roots;
    this.unresponsive = unresponsive;
    this.asked = asked;
  }
}

/** Every node tried failed; `errors` holds each attempt's error, in order. */
export class CloudError extends CirrusError {
  /** @param {string} method @param {CirrusError[]} errors */
  constructor(method, errors) {
    const what = errors.map((e) => e.message).join('; ');
    super(errors.length ? `${method}: every node tried failed: ${what}` : `${method}: no node to ask`);
    this.method = method;
    this.errors = errors;
    // The JSON-RPC code when every node answered the same one (e.g. all -32011).
    const codes = new Set(errors.map((e) => /** @type {any} */ (e).code));
    this.code = codes.size === 1 ? /** @type {number | undefined} */ ([...codes][0]) : undefined;
  }
}
