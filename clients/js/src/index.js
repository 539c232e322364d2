// @cirrus/client: a browser (and Node.js) client for a Cirrus network.
// See README.md for the guarantees; each module's header says what it holds.

export { Cloud } from './cloud.js';
export { Identity } from './identity.js';
export {
  signRecord, verifyRecord, signedMessage, recordId, checkLimits, checkReturned, supersedes,
  SIGNING_TAG, MAX_KEY_BYTES, MAX_VALUE_BYTES,
} from './record.js';
export { slotHash, leafHash, branchHash, nibble, verifyProof, EMPTY, EMPTY_HEX } from './merkle.js';
export { pickMajority } from './majority.js';
export { NodeHealth, HEALTH_DEFAULTS, PENALTY } from './health.js';
export { nodeUrls, hostOfMultiaddr, peerHosts, DEFAULT_PORTS } from './nodes.js';
export { HttpTransport } from './transport/http.js';
export { WsTransport } from './transport/ws.js';
export { toHex, fromHex } from './bytes.js';
export {
  CODES, CirrusError, RpcError, BehindError, TransportError, TimeoutError, RecordError,
  ProofError, VerificationError, SplitError, CloudError,
} from './errors.js';
