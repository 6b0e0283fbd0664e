// Health codes in the browser: "HCP1:"/"HC1:" payload -> base45 -> zlib -> COSE_Sign1 -> ES256/PS256 (WebCrypto)
// -> claims, expiry at the device's clock, revocation. Mirrors crypto/codes.py; every failure is a VerifyError
// whose `reason` is one of REASONS.
import { decode as b45decode } from '@digitalbazaar/base45';
import { inflate } from 'pako';
import { Decoder, Encoder, Tag } from 'cbor-x';

export const REASONS = [
  'not-a-code', 'unknown-key', 'wrong-issuer', 'bad-signature', 'expired', 'not-yet-valid', 'revoked',
];
const PREFIXES = { 'HCP1:': 'healthpsi', 'HC1:': 'eu-dcc' };
const MAX_PAYLOAD_CHARS = 8192;
const MAX_COSE_BYTES = 65536;
const HEADER_ALG = 1;
const HEADER_KID = 4;
const ALG_ES256 = -7;
const ALG_PS256 = -37;
const TAG_COSE_SIGN1 = 18;
const TAG_CWT = 61;
const COLOURS = ['green', 'yellow', 'red'];
const P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n;
const bigEndian = (bytes) => bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);

export class VerifyError extends Error {
  constructor(reason, detail) {
    super(detail);
    this.reason = reason;
  }
}

const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });
const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

function cbor(bytes, what) {
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new VerifyError('not-a-code', `${what}: not valid CBOR (${err.message})`);
  }
}

const get = (map, key) => (map instanceof Map ? map.get(key) : undefined);

/** Take a payload apart down to its COSE_Sign1 message; VerifyError('not-a-code') names the failing layer. */
export function decodePayload(payload) {
  if (typeof payload !== 'string' || payload.length > MAX_PAYLOAD_CHARS) {
    throw new VerifyError('not-a-code', 'payload: not text, or too long');
  }
  const prefix = Object.keys(PREFIXES).find((p) => payload.startsWith(p));
  if (!prefix) throw new VerifyError('not-a-code', 'payload prefix: expected "HCP1:" or "HC1:"');
  let compressed;
  try {
    compressed = b45decode(payload.slice(prefix.length));
  } catch (err) {
    throw new VerifyError('not-a-code', `base45: ${err.message}`);
  }
  let raw;
  try {
    raw = inflate(compressed);
  } catch (err) {
    throw new VerifyError('not-a-code', `zlib: ${err.message || err}`);
  }
  if (!(raw instanceof Uint8Array) || raw.length > MAX_COSE_BYTES) {
    throw new VerifyError('not-a-code', 'zlib: not valid compressed data, or inflates too far');
  }
  let item = cbor(raw, 'COSE');
  if (item instanceof Tag && item.tag === TAG_CWT) item = item.value;
  if (item instanceof Tag) {
    if (item.tag !== TAG_COSE_SIGN1) throw new VerifyError('not-a-code', `COSE: tag ${item.tag} is not COSE_Sign1`);
    item = item.value;
  }
  if (!Array.isArray(item) || item.length !== 4) {
    throw new VerifyError('not-a-code', 'COSE: COSE_Sign1 must be an array of 4 items');
  }
  const [protectedBytes, unprotected, body, signature] = item;
  if (!(protectedBytes instanceof Uint8Array) || !(unprotected instanceof Map)
      || !(body instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    throw new VerifyError('not-a-code', 'COSE: malformed COSE_Sign1 (headers, payload or signature)');
  }
  const prot = protectedBytes.length ? cbor(protectedBytes, 'COSE protected header') : new Map();
  if (!(prot instanceof Map)) throw new VerifyError('not-a-code', 'COSE: protected header must encode a map');
  const alg = prot.has(HEADER_ALG) ? prot.get(HEADER_ALG) : unprotected.get(HEADER_ALG);
  const kid = prot.has(HEADER_KID) ? prot.get(HEADER_KID) : unprotected.get(HEADER_KID);
  if (typeof alg !== 'number') throw new VerifyError('not-a-code', 'COSE: no alg in the headers');
  if (!(kid instanceof Uint8Array)) throw new VerifyError('not-a-code', 'COSE: no kid in the headers');
  return {
    format: PREFIXES[prefix], protectedBytes, protectedAlg: prot.get(HEADER_ALG), alg, kid, body, signature,
  };
}

export const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes));

async function verifySignature(cose, key) {
  const data = encoder.encode(['Signature1', cose.protectedBytes, new Uint8Array(0), cose.body]);
  let ok;
  if (cose.alg === ALG_ES256) {
    const pub = await key.ecdsa();
    if (!pub) throw new VerifyError('bad-signature', 'alg ES256 needs a P-256 (or, for a DCC, P-384) key');
    if (cose.signature.length !== 2 * pub.size) {
      throw new VerifyError('bad-signature', `ES256 signature is not ${2 * pub.size} bytes`);
    }
    if (cose.format === 'healthpsi' && bigEndian(cose.signature.subarray(32)) > P256_ORDER / 2n) {
      throw new VerifyError('bad-signature', 'ES256 signature is high-S (malleable); healthpsi codes are low-S');
    }
    ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, pub.key, cose.signature, data);
  } else if (cose.alg === ALG_PS256) {
    const pub = await key.rsaPss();
    if (!pub) throw new VerifyError('bad-signature', 'alg PS256 needs an RSA key; the trusted key is not one');
    ok = await crypto.subtle.verify({ name: 'RSA-PSS', saltLength: 32 }, pub, cose.signature, data);
  } else {
    throw new VerifyError('bad-signature', `unsupported COSE alg ${cose.alg} (supported: ES256, PS256)`);
  }
  if (!ok) throw new VerifyError('bad-signature', 'the signature does not verify');
}

function codeId(cert, format) {
  if (format === 'healthpsi') return cert.get('id');
  for (const group of ['v', 't', 'r']) {
    const items = cert.get(group);
    const first = Array.isArray(items) && items.length ? items[0] : null;
    if (first instanceof Map && typeof first.get('ci') === 'string') return first.get('ci');
  }
  return null;
}

/** Verify a payload against a checked trust list and the revocation lists (Map issuer region -> Set of code
 * ids) at `now` (a Date: the device's clock). A healthpsi code's `iss` must be its key's issuer, and only that
 * issuer's list can revoke it. Returns {format, colour, name, sid, id, issuer, expires}; throws VerifyError
 * with the reason. */
export async function verifyPayload(payload, trust, revoked, now) {
  const cose = decodePayload(payload);
  if (cose.format === 'healthpsi' && cose.protectedAlg !== ALG_ES256) {
    throw new VerifyError('bad-signature', 'healthpsi codes carry ES256 in the protected header');
  }
  const key = trust.find(cose.kid, cose.format);
  if (!key) throw new VerifyError('unknown-key', `kid ${toBase64(cose.kid)} is not in the trust list`);
  await verifySignature(cose, key);
  const claims = cbor(cose.body, 'claims');
  const hcert = get(claims, -260);
  const cert = get(hcert, 1);
  if (!(cert instanceof Map)) throw new VerifyError('not-a-code', 'claims: no health certificate at -260/1');
  if (cose.format === 'healthpsi' && (typeof cert.get('id') !== 'string' || !COLOURS.includes(cert.get('c')))) {
    throw new VerifyError('not-a-code', 'claims: a healthpsi code needs an id and a colour');
  }
  if (cose.format === 'healthpsi' && claims.get(1) !== key.issuer) {
    throw new VerifyError('wrong-issuer', `code claims issuer ${JSON.stringify(claims.get(1))} but is signed by `
      + `the key of issuer ${key.issuer}`);
  }
  const exp = claims.get(4);
  const iat = claims.get(6);
  if (typeof exp !== 'number') throw new VerifyError('not-a-code', 'claims: no expiry (exp)');
  const seconds = now.getTime() / 1000;
  if (typeof iat === 'number' && seconds < iat) {
    throw new VerifyError('not-yet-valid', `issued at ${new Date(iat * 1000).toISOString()}`);
  }
  if (seconds > exp) throw new VerifyError('expired', `expired at ${new Date(exp * 1000).toISOString()}`);
  const id = codeId(cert, cose.format);
  if (id !== null && revoked.get(key.issuer)?.has(id)) throw new VerifyError('revoked', `code ${id} is revoked`);
  let name = cert.get('n');
  if (cose.format === 'eu-dcc') {
    const nam = cert.get('nam');
    name = nam instanceof Map ? `${nam.get('gn') || ''} ${nam.get('fn') || ''}`.trim() : '';
  }
  return {
    format: cose.format,
    colour: cose.format === 'healthpsi' ? cert.get('c') : 'green',
    name: name || '',
    sid: cert.get('sid') || '',
    id,
    issuer: typeof claims.get(1) === 'string' ? claims.get(1) : '',
    expires: new Date(exp * 1000),
  };
}
