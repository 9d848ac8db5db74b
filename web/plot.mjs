// Canvas drawings: the loss and accuracy curves, and per-class accuracy.

export const BACKGROUND = '#ffffff';
const AXIS = '#888888';
const LOSS = '#d62728';
const TRAIN_ACC = '#1f77b4';
const TEST_ACC = '#2ca02c';

function clear(canvas) {
  const g = canvas.getContext('2d');
  g.fillStyle = BACKGROUND;
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.font = '12px sans-serif';
  return g;
}

function frame(g, x, y, w, h, title, yLabels) {
  g.strokeStyle = AXIS;
  g.lineWidth = 1;
  g.strokeRect(x, y, w, h);
  g.fillStyle = '#000000';
  g.fillText(title, x + 4, y - 6);
  g.fillStyle = AXIS;
  yLabels.forEach(([text, fraction]) => g.fillText(text, x - 40, y + h - fraction * h + 4));
}

function polyline(g, points, color) {
  if (points.length === 0) return;
  g.strokeStyle = color;
  g.fillStyle = color;
  g.lineWidth = 1.5;
  if (points.length === 1) {
    g.fillRect(points[0][0] - 2, points[0][1] - 2, 4, 4);
    return;
  }
  g.beginPath();
  points.forEach(([px, py], i) => (i === 0 ? g.moveTo(px, py) : g.lineTo(px, py)));
  g.stroke();
}

/// history: {losses: number[], trainAcc: [step, acc][], testAcc: [step, acc][]}
export function drawCurves(canvas, history, totalSteps) {
  const g = clear(canvas);
  const left = 50;
  const w = canvas.width - left - 10;
  const h = (canvas.height - 70) / 2;
  const steps = Math.max(totalSteps, history.losses.length, 2);
  const sx = (step) => left + (step / (steps - 1)) * w;

  const finite = history.losses.filter(Number.isFinite);
  const maxLoss = Math.max(1e-6, ...finite);
  frame(g, left, 20, w, h, 'training loss (per step)', [
    ['0', 0],
    [maxLoss.toPrecision(3), 1],
  ]);
  polyline(
    g,
    history.losses.map((l, i) => [sx(i), 20 + h - (Math.min(Math.max(l, 0), maxLoss) / maxLoss) * h]),
    LOSS,
  );

  const top = 50 + h;
  frame(g, left, top, w, h, 'accuracy: train (running, blue), test (green)', [
    ['0%', 0],
    ['100%', 1],
  ]);
  const ay = (a) => top + h - a * h;
  polyline(g, history.trainAcc.map(([s, a]) => [sx(s), ay(a)]), TRAIN_ACC);
  polyline(g, history.testAcc.map(([s, a]) => [sx(s), ay(a)]), TEST_ACC);
  g.fillStyle = AXIS;
  g.fillText(`step ${steps - 1}`, left + w - 50, canvas.height - 4);
}

/// Bars of test accuracy per class, classes sorted by training count
/// (most frequent first). rows: [{name, count, accuracy (0..1 or null)}].
export function drawClasses(canvas, rows) {
  const g = clear(canvas);
  const top = 24;
  const left = 170;
  const w = canvas.width - left - 60;
  const rowHeight = Math.max(12, Math.min(24, (canvas.height - top - 10) / Math.max(rows.length, 1)));
  g.fillStyle = '#000000';
  g.fillText('test accuracy per class, by training examples (most first)', 8, 14);
  rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    g.fillStyle = '#000000';
    g.fillText(`${row.name} (${row.count})`.slice(0, 26), 8, y + rowHeight - 6);
    g.strokeStyle = AXIS;
    g.strokeRect(left, y + 2, w, rowHeight - 4);
    if (row.accuracy !== null) {
      g.fillStyle = TRAIN_ACC;
      g.fillRect(left, y + 2, row.accuracy * w, rowHeight - 4);
      g.fillStyle = '#000000';
      g.fillText(`${(100 * row.accuracy).toFixed(1)}%`, left + w + 6, y + rowHeight - 6);
    }
  });
}

/// Pixels of `canvas` that differ from the background colour, and of those the
/// loss curve's (red: the frames and labels are grey and black).
export function drawnPixels(canvas) {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let drawn = 0;
  let loss = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r !== 255 || g !== 255 || b !== 255) drawn++;
    if (r > 150 && r - g > 60 && r - b > 60) loss++;
  }
  return { drawn, loss };
}
