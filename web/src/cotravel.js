// The citizen's side of the private co-travel check (DESIGN.md "Private co-travel check"): RFC 9497 VOPRF
// (ristretto255-SHA512) from @noble/curves. The client blinds its trip and carriage tokens for its own day and
// random tokens for every other published day, checks each day's DLEQ proof against the key in the
// coordinator's signed manifest, and looks its tags up locally.
import { ed25519, ristretto255_oprf } from '@noble/curves/ed25519.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import canonicalize from 'canonicalize';
import { checkSignature, checkTrustList } from './lists.js';

const voprf = ristretto255_oprf.voprf;
const utf8 = new TextEncoder();
const MANIFEST_TYPE = 'healthpsi-cotravel';

export const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes));
export const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const fromHex = (text) => Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));

/** RFC 9497 Blind: {blind, blinded} for the input bytes (`rng` as @noble/curves takes it, for test vectors). */
export const blind = (input, rng) => voprf.blind(input, rng);

/** RFC 9497 VerifyProof + Finalize over a batch: items [{input, blind, evaluated, blinded}] -> 64-byte outputs. */
export const finalizeBatch = (items, publicKey, proof) => voprf.finalizeBatch(items, publicKey, proof);

/** The published tag of a PRF output: HKDF-SHA256(y, info = "healthpsi tag")[:16]. */
export const tagOf = (output) => hkdf(sha256, output, undefined, utf8.encode('healthpsi tag'), 16);

export const tripToken = (trip, date) => `trip|${trip}|${date}`;
export const carriageToken = (trip, date, carriage) => `carriage|${trip}|${date}|${carriage}`;
const dummyToken = () => {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dummy|${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
};

async function getJson(url, init) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ? String(body.detail) : `${url}: HTTP ${response.status}`);
  return body;
}

/** The published manifests, each checked: trust list against the pinned root, identities against the root,
 * manifest against the coordinator's Ed25519 key. Returns Map day -> {publicKey, tags: Set of base64}. */
async function loadManifests(urls) {
  const config = await getJson(urls.config);
  const bundle = await getJson(urls.manifest);
  // no freshness check here: the list only anchors the coordinator's identity key, not codes or revocations
  const trust = await checkTrustList(bundle.trustlist, config.root_fingerprint);
  await checkSignature(bundle.identities, 'healthpsi-identities', trust.rootKey);
  const coordinator = fromHex(bundle.identities.coordinator);
  const days = new Map();
  for (const doc of bundle.manifests) {
    if (!doc || doc.type !== MANIFEST_TYPE || !doc.signature || doc.signature.alg !== 'Ed25519') {
      throw new Error('co-travel manifest: not a signed manifest');
    }
    const body = { ...doc };
    delete body.signature;
    if (!ed25519.verify(fromBase64(doc.signature.value), utf8.encode(canonicalize(body)), coordinator)) {
      throw new Error(`co-travel manifest ${doc.date}: the signature does not verify`);
    }
    days.set(doc.date, { publicKey: fromBase64(doc.public_key), tags: new Set(doc.tags) });
  }
  return days;
}

/** Check a trip: {trip, date: "YYYY-MM-DD", carriage?} -> {trip: bool, carriage: bool | null}. */
export async function checkTrip(query, urls) {
  const trip = query.trip.trim().toUpperCase();
  if (!/^[A-Z0-9]{1,32}$/.test(trip)) throw new Error('trip: letters and digits only');
  const days = await loadManifests(urls);
  if (!days.has(query.date)) {
    throw new Error(`${query.date}: outside the published days (${[...days.keys()][0]} to ${[...days.keys()].pop()})`);
  }
  const carriage = query.carriage ? String(parseInt(query.carriage, 10)) : null;
  const sent = {};
  const kept = new Map();
  for (const day of days.keys()) {
    const inputs = day === query.date
      ? [tripToken(trip, day), carriage ? carriageToken(trip, day, carriage) : dummyToken()]
      : [dummyToken(), dummyToken()];
    const items = inputs.map((text) => {
      const input = utf8.encode(text);
      return { input, ...blind(input) };
    });
    kept.set(day, items);
    sent[day] = items.map((item) => toBase64(item.blinded));
  }
  const answer = await getJson(urls.evaluate, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ blinded: sent }),
  });
  let outputs = null;
  for (const [day, items] of kept) {
    const evaluation = answer.evaluations[day];
    if (!evaluation || evaluation.evaluated.length !== items.length) throw new Error(`${day}: no evaluation`);
    const batch = items.map((item, i) => ({ ...item, evaluated: fromBase64(evaluation.evaluated[i]) }));
    const out = finalizeBatch(batch, days.get(day).publicKey, fromBase64(evaluation.proof)); // throws on a bad proof
    if (day === query.date) outputs = out;
  }
  const tags = days.get(query.date).tags;
  return {
    trip: tags.has(toBase64(tagOf(outputs[0]))),
    carriage: carriage ? tags.has(toBase64(tagOf(outputs[1]))) : null,
  };
}
