// The verifier's signed lists (crypto/pki.py): the trust list, its root pinned by the SHA-256 fingerprint of
// the root certificate's DER, and the revocation list signed by that root. Signatures are ES256 (r || s,
// base64) over the canonical JSON of the document without its "signature" member.
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs the Reflect metadata API
import { X509Certificate } from '@peculiar/x509';
import canonicalize from 'canonicalize';

const TRUSTLIST_TYPE = 'healthpsi-trustlist';
const REVOCATIONS_TYPE = 'healthpsi-revocations';

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

/** Check a root-signed document's type, version and ES256 signature (crypto/pki.py's sign_document). */
export async function checkSignature(doc, type, rootKey) {
  if (!doc || typeof doc !== 'object' || doc.type !== type || doc.version !== 1) {
    throw new ListError(`expected a ${type} document (version 1)`);
  }
  const sig = doc.signature;
  if (!sig || sig.alg !== 'ES256' || typeof sig.value !== 'string') throw new ListError(`${type}: no ES256 signature`);
  const body = { ...doc };
  delete body.signature;
  const data = new TextEncoder().encode(canonicalize(body));
  const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, rootKey,
    fromBase64(sig.value, `${type} signature`), data);
  if (!ok) throw new ListError(`${type}: the signature does not verify against the root key`);
}

/** A trusted code-signing key: its certificate, the key id codes of its format carry, and WebCrypto keys. */
class TrustedKey {
  constructor(cert, kid, format) {
    this.cert = cert;
    this.kid = kid;
    this.format = format;
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

/** Check a trust-list document against the pinned root fingerprint (hex); returns {root, rootKey, issuedAt, find}. */
export async function checkTrustList(doc, pinnedFingerprint) {
  if (!doc || typeof doc.root !== 'string') throw new ListError('trust list: no root certificate');
  const rootDer = fromBase64(doc.root, 'trust list root');
  if (hex(await sha256(rootDer)) !== pinnedFingerprint.toLowerCase()) {
    throw new ListError('trust list: its root is not the pinned root');
  }
  const root = certificate(rootDer, 'trust list root');
  const rootKey = await root.publicKey.export({ name: 'ECDSA', namedCurve: 'P-256' }, ['verify']);
  await checkSignature(doc, TRUSTLIST_TYPE, rootKey);
  if (!Array.isArray(doc.keys)) throw new ListError('trust list: keys must be a list');
  const index = new Map();
  for (const [i, entry] of doc.keys.entries()) {
    if (!entry || !['healthpsi', 'eu-dcc'].includes(entry.format)) {
      throw new ListError(`trust list key ${i}: unknown format`);
    }
    const der = fromBase64(entry.certificate, `trust list key ${i} certificate`);
    const cert = certificate(der, `trust list key ${i}`);
    const digest = await sha256(entry.format === 'healthpsi' ? new Uint8Array(cert.publicKey.rawData) : der);
    const kid = fromBase64(entry.kid, `trust list key ${i} kid`);
    if (hex(digest.slice(0, 8)) !== hex(kid)) throw new ListError(`trust list key ${i}: kid does not match`);
    if (entry.format === 'healthpsi' && !(await cert.verify({ publicKey: root, signatureOnly: true }))) {
      throw new ListError(`trust list key ${i}: certificate is not issued by the root`);
    }
    index.set(`${entry.format}:${hex(kid)}`, new TrustedKey(cert, kid, entry.format));
  }
  return {
    rootKey,
    issuedAt: doc.issued_at,
    size: index.size,
    find: (kid, format) => index.get(`${format}:${hex(kid)}`),
  };
}

/** Check a revocation document's root signature; returns {revoked: Set of code ids, issuedAt}. */
export async function checkRevocations(doc, rootKey) {
  await checkSignature(doc, REVOCATIONS_TYPE, rootKey);
  if (!Array.isArray(doc.revoked) || !doc.revoked.every((x) => typeof x === 'string')) {
    throw new ListError('revocations: revoked must be a list of code ids');
  }
  return { revoked: new Set(doc.revoked), issuedAt: doc.issued_at };
}
