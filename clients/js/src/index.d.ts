// Types of @cirrus/client (the code is plain ES modules with JSDoc).

export type Kind = 'doc' | 'rating';
export type Seq = number | bigint;

export interface UnsignedRecord { author: string; kind: Kind; key: string; seq: Seq; value: string | null }
export interface SignedRecord extends UnsignedRecord { sig: string; id?: string }

export interface Proof { branches: string[][]; leaf: { slot: string; id: string } | null }
export type ProofResult = { present: true; id: string } | { present: false; id: null };

export interface HealthSnapshot { ok: number; failed: number; penalty: number; averageMs: number | null; avoided: string | null }
export interface NodeInfo { url: string; http: string; ws: string; peerId: string | null; discovered: boolean; health: HealthSnapshot }

export type CloudEvent =
  | { type: 'call'; node: string; method: string; ms: number; ok: boolean; error?: string; code?: number }
  | { type: 'session'; session: string | null }
  | { type: 'node'; node: string; discovered: boolean; peerId?: string | null }
  | { type: 'penalty'; node: string; reason: string }
  | { type: 'discover'; node?: string; error?: string; added?: string[] };

export interface Transport { url: string; kind: string; call(method: string, params: object, timeoutMs: number): Promise<any>; close(): void }

export interface CloudOptions {
  /** One or more node URLs: http://HOST:38081, ws://HOST:38082, or {http, ws}. */
  nodes: string | Array<string | { http: string; ws: string }>;
  /** Default 'ws' where WebSocket exists (works cross-origin today), else 'http'. */
  transport?: 'ws' | 'http';
  /** Learn the other nodes from getpeerinfo (default true). */
  discover?: boolean;
  rediscoverMs?: number;
  /** Per-attempt timeout, ms (default 5000; at least wait + 3000). */
  timeoutMs?: number;
  /** How long a node may wait for the session's writes, ms (node default 2000, max 10000). */
  wait?: number;
  /** Nodes tried per call before giving up (default 4). */
  maxAttempts?: number;
  /** Nodes asked for their root in a verified read (default 5). */
  verifyNodes?: number;
  /** How long a verified read waits for differing roots to settle, ms (default 3000). */
  settleMs?: number;
  /** A saved session token to resume. */
  session?: string | null;
  onSession?: (token: string | null) => void;
  onEvent?: (ev: CloudEvent) => void;
  health?: Partial<typeof HEALTH_DEFAULTS>;
  now?: () => number;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
  /** Replace the transports (tests, other runtimes). */
  makeTransport?: (kind: 'ws' | 'http', url: string) => Transport;
}

export interface PutResult { id: string; status: 'applied' | 'stale' | 'duplicate'; session?: string; node: string; record: SignedRecord }
export interface ListResult { records: SignedRecord[]; next: string | null }
export interface Rating { target: string; count: number; sum: number; average: number | null }

export interface VerifiedRead {
  present: boolean;
  record: SignedRecord | null;
  /** The strict-majority root the proof was checked against. */
  root: string;
  /** The node whose proof was checked. */
  servedBy: string;
  agreed: string[];
  disagreed: { node: string; root: string }[];
  unresponsive: { node: string; error: string }[];
  /** Nodes of the majority that served a proof or record that did not check out. */
  caught: { node: string; reason: string }[];
  asked: number;
}

type Via = { via?: string };

export class Cloud {
  constructor(opts: CloudOptions);
  session: string | null;
  readonly nodes: NodeInfo[];
  addNode(url: string | { http: string; ws: string }, discovered?: boolean): string;
  discover(): Promise<string[]>;
  order(via?: string): unknown[];
  pickNodes(n: number, via?: string): string[];
  penalize(url: string, reason: string, amount?: number): void;
  call(method: string, params?: object, o?: Via & { timeoutMs?: number; check?: (r: any) => void }): Promise<any>;
  callWithNode(method: string, params?: object, o?: Via & { timeoutMs?: number; check?: (r: any) => void }): Promise<{ result: any; node: string }>;
  callOn(url: string, method: string, params?: object, o?: { timeoutMs?: number; check?: (r: any) => void }): Promise<any>;
  put(identity: Identity, key: string, value: string | null, o?: Via & { kind?: Kind; seq?: Seq }): Promise<PutResult>;
  rate(identity: Identity, target: string, score: 1 | 2 | 3 | 4 | 5 | null, o?: Via & { seq?: Seq }): Promise<PutResult>;
  delete(identity: Identity, key: string, o?: Via & { kind?: Kind }): Promise<PutResult>;
  get(author: string, key: string, o?: Via & { kind?: Kind }): Promise<SignedRecord | null>;
  list(params?: { author?: string; kind?: Kind; prefix?: string; after?: string; limit?: number }, o?: Via & { verify?: boolean }): Promise<ListResult>;
  getRating(target: string, o?: Via): Promise<Rating>;
  verifiedGet(author: string, key: string, o?: Via & { kind?: Kind; nodes?: number; settleMs?: number }): Promise<VerifiedRead>;
  close(): void;
}

export class Identity {
  constructor(seed: Uint8Array);
  static generate(): Identity;
  static fromHex(hex: string): Identity;
  readonly author: string;
  seedHex(): string;
  sign(fields: { kind?: Kind; key: string; seq: Seq; value: string | null }): SignedRecord;
}

export function signRecord(seed: Uint8Array, fields: { kind?: Kind; key: string; seq: Seq; value: string | null }): SignedRecord;
export function verifyRecord(r: SignedRecord): void;
export function signedMessage(r: UnsignedRecord): Uint8Array;
export function recordId(r: SignedRecord): string;
export function checkLimits(r: UnsignedRecord): void;
export function checkReturned(record: SignedRecord | null | undefined, slot: { author: string; kind: string; key: string }): void;
export function supersedes(a: SignedRecord, b: SignedRecord): boolean;
export const SIGNING_TAG: Uint8Array;
export const MAX_KEY_BYTES: number;
export const MAX_VALUE_BYTES: number;

export function slotHash(author: string, kind: Kind, key: string): Uint8Array;
export function leafHash(slot: Uint8Array, id: Uint8Array): Uint8Array;
export function branchHash(children: Uint8Array[]): Uint8Array;
export function nibble(hash: Uint8Array, i: number): number;
export function verifyProof(proof: Proof, root: string | Uint8Array, slot: Uint8Array): ProofResult;
export const EMPTY: Uint8Array;
export const EMPTY_HEX: string;

export interface Majority { root: string; agreed: string[]; disagreed: { node: string; root: string }[]; unresponsive: { node: string; error: string }[]; asked: number }
export function pickMajority(answers: { node: string; root?: string; error?: string }[]): Majority;

export const HEALTH_DEFAULTS: { halfLifeMs: number; slowMs: number; penaltyHalfLifeMs: number; minFailures: number; maxPenalty: number };
export const PENALTY: { disagreed: number; unresponsive: number; badProof: number };
export class NodeHealth {
  constructor(opts?: { now?: () => number } & Partial<typeof HEALTH_DEFAULTS>);
  success(ms: number): void;
  failure(reason: string, weight?: number): void;
  penalize(reason: string, amount?: number): void;
  avoidReason(): string | null;
  readonly avoided: boolean;
  averageMs(): number | null;
  badness(): number;
  snapshot(): HealthSnapshot;
}

export const DEFAULT_PORTS: { http: number; ws: number };
export function nodeUrls(given: string | { http?: string; ws?: string }): { http: string; ws: string };
export function hostOfMultiaddr(ma: string): string | null;
export function peerHosts(peer: { addr?: string; stun?: { address?: string | null } | null }): string[];

export class HttpTransport implements Transport {
  constructor(url: string, opts?: { fetch?: typeof fetch });
  url: string; kind: string;
  call(method: string, params: object, timeoutMs: number): Promise<any>;
  close(): void;
}
export class WsTransport implements Transport {
  constructor(url: string, opts?: { WebSocket?: typeof WebSocket; onNotification?: (msg: { method: string; params: any }) => void });
  url: string; kind: string;
  call(method: string, params: object, timeoutMs: number): Promise<any>;
  close(): void;
}

export function toHex(b: Uint8Array): string;
export function fromHex(s: string, len?: number, what?: string): Uint8Array;

export const CODES: Readonly<Record<'PARSE' | 'INVALID_REQUEST' | 'METHOD_NOT_FOUND' | 'INVALID_PARAMS' | 'INTERNAL' | 'BAD_SIGNATURE' | 'BAD_RECORD' | 'TOO_LARGE' | 'RELAY' | 'RATE_LIMITED' | 'ADMIN_ONLY' | 'COOKIE' | 'BEHIND', number>>;
export class CirrusError extends Error { node?: string }
export class RpcError extends CirrusError { code: number; data: unknown; rpcMessage: string }
export class BehindError extends RpcError { missing?: number }
export class TransportError extends CirrusError {}
export class TimeoutError extends TransportError {}
export class RecordError extends CirrusError { code: number }
export class ProofError extends CirrusError {}
export class VerificationError extends CirrusError {}
export class SplitError extends CirrusError { roots: Record<string, string[]>; unresponsive: { node: string; error: string }[]; asked: number }
export class CloudError extends CirrusError { method: string; errors: CirrusError[]; code?: number }
