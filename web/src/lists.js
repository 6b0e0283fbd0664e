// The verifier's signed lists (crypto/pki.py): the trust list (version 2) of every issuing authority's keys,
// its root pinned by the SHA-256 fingerprint of the root certificate's DER, and one revocation list (version 2)
// per issuer, signed by that issuer's code-signing key; both refused after issued_at + max_age. Signatures
// are ES256 (r || s, base64) over the canonical JSON of the document without its "signature" member.
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs the Reflect metadata API
import { X509Certificate } from '@peculiar/x509';
import canonicalize from 'canonicalize';

const TRUSTLIST_TYPE = 'healthpsi-trustlist';
const REVOCATIONS_TYPE = 'healthpsi-revocations';
const LIST_VERSION = 2;
const REGION = /^[1-9][0-9]{5}$/;

export class ListError extends Error {}

const fromBase64 = (text, what) => {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    throw new ListError(`${what}: not valid base64`);
  }
};
const hex = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
const certificate = (der, what) => {
  try {
    return new X509Certificate(der);
  } catch (err) {
    throw new ListError(`${what}: not a certificate (${err.message})`);
  }
};

/** Check a signed document's type, version and ES256 signature by `key` (crypto/pki.py's sign_document). */
export async function checkSignature(doc, type, key, version = 1, signer = 'the root key') {
  if (!doc || typeof doc !== 'object' || doc.type !== type || doc.version !== version) {
    throw new ListError(`expected a ${type} document (version ${version})`);
  }
  const sig = doc.signature;
  if (!sig || sig.alg !== 'ES256' || typeof sig.value !== 'string') throw new ListError(`${type}: no ES256 signature`);
  const body = { ...doc };
  delete body.signature;
  const data = new TextEncoder().encode(canonicalize(body));
  const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key,
    fromBase64(sig.value, `${type} signature`), data);
  if (!ok) throw new ListError(`${type}: the signature does not verify against ${signer}`);
}

/** Refuse a list used after issued_at + max_age (seconds) at `now` (the device's clock): a stale or
 * rolled-back list (crypto/pki.py's check_fresh). */
function checkFresh(doc, what, now) {
  const issued = Date.parse(doc.issued_at);
  if (typeof doc.issued_at !== 'string' || Number.isNaN(issued)) throw new ListError(`${what}: no issued_at`);
  if (!Number.isInteger(doc.max_age) || doc.max_age <= 0) {
    throw new ListError(`${what} max_age: expected a positive number of seconds`);
  }
  const until = new Date(issued + doc.max_age * 1000);
  if (now > until) {
    throw new ListError(`${what} is stale: issued ${doc.issued_at}, usable until ${until.toISOString()}, `
      + `device clock ${now.toISOString()}`);
  }
}

/** A trusted code-signing key: its certificate, the key id codes of its format carry, and WebCrypto keys. */
class TrustedKey {
  constructor(cert, kid, format, issuer) {
    this.cert = cert;
    this.kid = kid;
    this.format = format;
    this.issuer = issuer; // the issuing authority's region code (healthpsi keys); '' for EU DCC signers
  }

  /** {key, size} for ES256: P-256 for healthpsi codes; P-256 or P-384 for EU DCCs (as crypto/codes.py). */
  async ecdsa() {
    const { name, namedCurve } = this.cert.publicKey.algorithm;
    const curves = this.format === 'healthpsi' ? ['P-256'] : ['P-256', 'P-384'];
    if (name !== 'ECDSA' || !curves.includes(namedCurve)) return null;
    const key = await this.cert.publicKey.export({ name: 'ECDSA', namedCurve }, ['verify']);
    return { key, size: namedCurve === 'P-384' ? 48 : 32 };
  }

  async rsaPss() {
    if (!this.cert.publicKey.algorithm.name.startsWith('RSA')) return null;
    return this.cert.publicKey.export({ name: 'RSA-PSS', hash: 'SHA-256' }, ['verify']);
  }
}

/** Check a trust-list document against the pinned root fingerprint (hex) and, when `now` (a Date) is given,
 * its freshness; returns {rootKey, issuedAt, size, issuers: Set of region codes, find}. */
export async function checkTrustList(doc, pinnedFingerprint, now = null) {
  if (!doc || typeof doc.root !== 'string') throw new ListError('trust list: no root certificate');
  const rootDer = fromBase64(doc.root, 'trust list root');
  if (hex(await sha256(rootDer)) !== pinnedFingerprint.toLowerCase()) {
    throw new ListError('trust list: its root is not the pinned root');
  }
  const root = certificate(rootDer, 'trust list root');
  const rootKey = await root.publicKey.export({ name: 'ECDSA', namedCurve: 'P-256' }, ['verify']);
  await checkSignature(doc, TRUSTLIST_TYPE, rootKey, LIST_VERSION);
  if (now !== null) checkFresh(doc, 'trust list', now);
  if (!Array.isArray(doc.keys)) throw new ListError('trust list: keys must be a list');
  const index = new Map();
  const issuers = new Set();
  for (const [i, entry] of doc.keys.entries()) {
    if (!entry || !['healthpsi', 'eu-dcc'].includes(entry.format)) {
      throw new ListError(`trust list key ${i}: unknown format`);
    }
    const der = fromBase64(entry.certificate, `trust list key ${i} certificate`);
    const cert = certificate(der, `trust list key ${i}`);
    const digest = await sha256(entry.format === 'healthpsi' ? new Uint8Array(cert.publicKey.rawData) : der);
    const kid = fromBase64(entry.kid, `trust list key ${i} kid`);
    if (hex(digest.slice(0, 8)) !== hex(kid)) throw new ListError(`trust list key ${i}: kid does not match`);
    let issuer = '';
    if (entry.format === 'healthpsi') {
      if (typeof entry.issuer !== 'string' || !REGION.test(entry.issuer)) {
        throw new ListError(`trust list key ${i}: issuer must be a six-digit region code`);
      }
      if (!(await cert.verify({ publicKey: root, signatureOnly: true }))) {
        throw new ListError(`trust list key ${i}: certificate is not issued by the root`);
      }
      issuer = entry.issuer;
      issuers.add(issuer);
    }
    index.set(`${entry.format}:${hex(kid)}`, new TrustedKey(cert, kid, entry.format, issuer));
  }
  return {
    rootKey,
    issuedAt: doc.issued_at,
    size: index.size,
    issuers,
    find: (kid, format) => index.get(`${format}:${hex(kid)}`),
  };
}

/** Check one issuer's revocation document at `now` (the device's clock): signed by the trust-list key whose
 * kid it names, that key's issuer being the one the document names; returns {issuer, revoked: Set of code
 * ids, issuedAt}. */
export async function checkRevocations(doc, trust, now) {
  if (!doc || typeof doc !== 'object' || doc.type !== REVOCATIONS_TYPE) {
    throw new ListError(`expected a ${REVOCATIONS_TYPE} document`);
  }
  const key = typeof doc.kid === 'string' ? trust.find(fromBase64(doc.kid, 'revocations kid'), 'healthpsi') : null;
  if (!key) throw new ListError(`revocations of issuer ${doc.issuer}: signed by a kid that is not in the trust list`);
  if (key.issuer !== doc.issuer) {
    throw new ListError(`revocations name issuer ${doc.issuer} but are signed by the key of issuer ${key.issuer}`);
  }
  const ecdsa = await key.ecdsa();
  if (!ecdsa) throw new ListError(`revocations of issuer ${doc.issuer}: the issuer's key is not a P-256 key`);
  await checkSignature(doc, REVOCATIONS_TYPE, ecdsa.key, LIST_VERSION, `the key of issuer ${doc.issuer}`);
  checkFresh(doc, `revocation list of issuer ${doc.issuer}`, now);
  if (!Array.isArray(doc.revoked) || !doc.revoked.every((x) => typeof x === 'string')) {
    throw new ListError('revocations: revoked must be a list of code ids');
  }
  return { issuer: doc.issuer, revoked: new Set(doc.revoked), issuedAt: doc.issued_at };
}
