// Reading QR codes with jsQR: from the camera (getUserMedia, frame by frame) or from an uploaded image.
import jsQR from 'jsqr';

function readCanvas(canvas, source, width, height) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  const image = ctx.getImageData(0, 0, width, height);
  const found = jsQR(image.data, width, height, { inversionAttempts: 'attemptBoth' });
  return found && found.data ? found.data : null;
}

/** The text of the QR code in an image file, or null when none can be read. */
export async function scanFile(file) {
  const bitmap = await createImageBitmap(file);
  try {
    return readCanvas(document.createElement('canvas'), bitmap, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/** Start the camera into `video`; calls onText(text) once for the first QR code seen, then stops. */
export async function scanCamera(video, onText) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  video.srcObject = stream;
  await video.play();
  const canvas = document.createElement('canvas');
  let stopped = false;
  const stop = () => {
    stopped = true;
    stream.getTracks().forEach((t) => t.stop());
    video.srcObject = null;
  };
  const tick = () => {
    if (stopped) return;
    if (video.readyState >= 2 && video.videoWidth) {
      const text = readCanvas(canvas, video, video.videoWidth, video.videoHeight);
      if (text) {
        stop();
        onText(text);
        return;
      }
    }
    setTimeout(tick, 120);
  };
  tick();
  return stop;
}
