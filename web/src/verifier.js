// The checkpoint verifier page: loads the signed lists once (the service worker keeps them for offline use),
// scans a code from the camera or an image, verifies it on the device and shows a full-screen verdict.
import { checkRevocations, checkTrustList } from './lists.js';
import { verifyPayload, VerifyError } from './code.js';
import { scanCamera, scanFile } from './scan.js';

const $ = (id) => document.getElementById(id);
const texts = JSON.parse($('verifier-texts').textContent);
const t = (key) => texts[key] || key;
let lists = null;
let stopCamera = null;

async function getJson(url) {
  const response = await fetch(url, { cache: 'no-cache' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function loadLists() {
  const status = $('lists-status');
  try {
    const now = new Date();
    const config = await getJson($('verifier').dataset.config);
    const trust = await checkTrustList(await getJson(config.trustlist_url), config.root_fingerprint, now);
    const revoked = new Map();
    const dates = [];
    for (const url of config.revocations_urls) {
      const list = await checkRevocations(await getJson(url), trust, now);
      revoked.set(list.issuer, list.revoked);
      dates.push(`${list.issuer} ${list.issuedAt} (${list.revoked.size})`);
    }
    const missing = [...trust.issuers].filter((issuer) => !revoked.has(issuer));
    if (missing.length) throw new Error(`no revocation list for issuer ${missing.join(', ')}`);
    lists = { config, trust, revoked };
    status.textContent = `${t('lists.ok')} · ${t('lists.trust')} ${trust.issuedAt} (${trust.size}) · `
      + `${t('lists.revocations')} ${dates.join(', ')}`;
    status.dataset.state = 'ready';
  } catch (err) {
    lists = null;
    status.textContent = `${t('lists.failed')}: ${err.message}`;
    status.dataset.state = 'failed';
  }
}

function report(result) {
  const checkpoint = $('checkpoint').value.trim();
  if (!navigator.onLine || !checkpoint || !lists) return;
  fetch(lists.config.scans_url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ checkpoint, result }),
  }).catch(() => {});
}

function show(verdict, fields) {
  const box = $('result');
  box.dataset.result = verdict;
  box.dataset.reason = fields.reason || '';
  $('result-verdict').textContent = t(`verdict.${verdict}`);
  $('result-name').textContent = fields.name || '';
  $('result-sid').textContent = fields.sid || '';
  $('result-reason').textContent = fields.reason ? `${t(`reason.${fields.reason}`)} — ${fields.detail}` : '';
  $('result-expires').textContent = fields.expires ? `${t('result.expires')} ${fields.expires.toLocaleString()}` : '';
  box.hidden = false;
  report(verdict);
}

async function verify(text) {
  if (!lists) {
    show('invalid', { reason: 'no-lists', detail: $('lists-status').textContent });
    return;
  }
  try {
    const code = await verifyPayload(text.trim(), lists.trust, lists.revoked, new Date());
    show(code.colour, code);
  } catch (err) {
    if (err instanceof VerifyError) show('invalid', { reason: err.reason, detail: err.message });
    else show('invalid', { reason: 'not-a-code', detail: String(err.message || err) });
  }
}

$('scan-start').addEventListener('click', async () => {
  if (stopCamera) stopCamera();
  const video = $('camera');
  video.hidden = false;
  try {
    stopCamera = await scanCamera(video, (text) => {
      video.hidden = true;
      stopCamera = null;
      verify(text);
    });
  } catch (err) {
    video.hidden = true;
    show('invalid', { reason: 'no-camera', detail: err.message });
  }
});

$('upload').addEventListener('change', async (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (!file) return;
  let text = null;
  try {
    text = await scanFile(file);
  } catch (err) {
    text = null;
  }
  if (text === null) show('invalid', { reason: 'no-qr', detail: file.name });
  else verify(text);
});

$('paste-form').addEventListener('submit', (event) => {
  event.preventDefault();
  verify($('paste').value);
});

$('result-close').addEventListener('click', () => {
  $('result').hidden = true;
});

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register($('verifier').dataset.worker, { scope: $('verifier').dataset.scope })
    .catch((err) => { $('offline-status').textContent = `${t('offline.failed')}: ${err.message}`; });
  navigator.serviceWorker.ready.then(() => {
    $('offline-status').textContent = t('offline.ready');
    $('offline-status').dataset.state = 'ready';
  });
}
loadLists();
