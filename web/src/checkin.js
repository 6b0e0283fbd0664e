// The citizen page's venue check-in (#checkin-form): scan the venue code at the gate with the camera or from
// an image (the verifier's jsQR scanner), put its text in the form and send it; the service checks the
// signature. Also the print button of a venue's printable code ([data-print]).
import { scanCamera, scanFile } from './scan.js';

function show(problem, key) {
  problem.textContent = problem.dataset[key];
  problem.hidden = false;
}

export function checkinForm(form) {
  const text = form.querySelector('#venue-qr');
  const problem = form.querySelector('#checkin-problem');
  const video = form.querySelector('#checkin-video');
  const send = (payload) => {
    text.value = payload;
    problem.hidden = true;
    form.submit();
  };
  form.querySelector('#checkin-upload').addEventListener('change', async (event) => {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    const payload = await scanFile(file).catch(() => null);
    if (payload) send(payload);
    else show(problem, 'noQr');
  });
  form.querySelector('#checkin-camera').addEventListener('click', async () => {
    video.hidden = false;
    try {
      await scanCamera(video, (payload) => {
        video.hidden = true;
        send(payload);
      });
    } catch (err) {
      video.hidden = true;
      show(problem, 'noCamera');
    }
  });
}

export function printButtons() {
  for (const button of document.querySelectorAll('[data-print]')) {
    button.addEventListener('click', () => window.print());
  }
}
