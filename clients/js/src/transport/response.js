// Reading one JSON-RPC response object: its result, or its error as RpcError.

import { RpcError, TransportError } from '../errors.js';

/** @param {any} msg @param {number} id @param {string} url */
export function answerOf(msg, id, url) {
  if (!msg || typeof msg !== 'object' || msg.jsonrpc !== '2.0') {
    throw new TransportError(`${url}: not a JSON-RPC 2.0 response`, { node: url });
  }
  if (msg.error) throw RpcError.from(msg.error, url);
  if (msg.id !== id) throw new TransportError(`${url}: answer for id ${msg.id}, expected ${id}`, { node: url });
  if (!('result' in msg)) throw new TransportError(`${url}: neither result nor error`, { node: url });
  return msg.result;
}
