// The citizen pages: live clocks (`data-clock`), validity countdowns (`data-expires="ISO"`), the private
// co-travel check form (#cotravel-form) and the venue check-in (#checkin-form). Exposed as `healthpsiCitizen`
// (the VOPRF client's steps).
import { checkinForm, printButtons } from './checkin.js';
import { checkTrip } from './cotravel.js';

export { blind, finalizeBatch, tagOf, checkTrip } from './cotravel.js';

const pad = (n) => String(n).padStart(2, '0');

function tick() {
  const now = new Date();
  for (const el of document.querySelectorAll('[data-clock]')) {
    el.textContent = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())} `
      + `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}`;
  }
  for (const el of document.querySelectorAll('[data-expires]')) {
    const left = Math.max(0, Math.floor((Date.parse(el.dataset.expires) - now.getTime()) / 1000));
    el.textContent = `${Math.floor(left / 3600)}:${pad(Math.floor(left / 60) % 60)}:${pad(left % 60)}`;
    el.dataset.left = String(left);
  }
}

function cotravelForm(form) {
  const result = document.getElementById('cotravel-result');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    result.dataset.found = '';
    result.dataset.state = 'checking';
    result.textContent = '…';
    try {
      const found = await checkTrip(
        { trip: String(data.get('trip')), date: String(data.get('date')), carriage: String(data.get('carriage') || '') },
        { config: form.dataset.config, manifest: form.dataset.manifest, evaluate: form.dataset.evaluate },
      );
      const hit = found.trip || found.carriage === true;
      result.dataset.found = String(hit);
      result.dataset.carriage = String(found.carriage);
      result.textContent = found.carriage ? result.dataset.textFoundCarriage
        : found.trip ? result.dataset.textFoundTrip : result.dataset.textNotFound;
    } catch (err) {
      result.textContent = `${result.dataset.textFailed}: ${err.message}`;
    }
    result.dataset.state = 'done';
  });
}

if (typeof document !== 'undefined') {
  tick();
  setInterval(tick, 1000); // also picks up clocks and countdowns added to the page later
  const form = document.getElementById('cotravel-form');
  if (form) cotravelForm(form);
  const checkin = document.getElementById('checkin-form');
  if (checkin) checkinForm(checkin);
  printButtons();
}
