// Charts as inline SVG, drawn here rather than by a script in the page: the report opens
// anywhere (no network, no JavaScript), prints, and its numbers are in the markup. Each
// mark carries a <title>, which browsers show on hover.

export interface BarSeries {
  name: string;
  values: readonly number[];
}

export interface TimeSeries {
  name: string;
  /** Times in milliseconds since the epoch, ascending. */
  points: ReadonlyArray<{ t: number; v: number }>;
}

/** Okabe–Ito colours: distinguishable with the common colour-vision deficiencies; the pale yellow last, as it is faint on white. */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#000000', '#999999', '#F0E442'];

const FONT = 12;
const BAR_HEIGHT = 16;
const BAR_GAP = 6;
const LABEL_CHARS_MAX = 44;
/** Approximate width of a character of the chart font, to size the label column. */
const CHAR_WIDTH = 7;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Horizontal bars, one group per category and one bar per series in it. */
export function barChart(categories: readonly string[], series: readonly BarSeries[], format: (v: number) => string, width = 760): string {
  const labelWidth = Math.min(LABEL_CHARS_MAX, Math.max(4, ...categories.map((c) => c.length))) * CHAR_WIDTH + 10;
  const valueWidth = 90;
  const plotWidth = width - labelWidth - valueWidth;
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  const groupHeight = series.length * BAR_HEIGHT + BAR_GAP;
  const legend = series.length > 1 ? FONT + 12 : 0;
  const height = legend + categories.length * groupHeight + BAR_GAP;
  const marks: string[] = [];
  categories.forEach((category, ci) => {
    const y0 = legend + BAR_GAP + ci * groupHeight;
    const label = category.length > LABEL_CHARS_MAX ? `${category.slice(0, LABEL_CHARS_MAX - 1)}…` : category;
    marks.push(`<text x="${labelWidth - 8}" y="${y0 + (series.length * BAR_HEIGHT) / 2 + FONT / 2 - 2}" text-anchor="end">${escapeXml(label)}</text>`);
    series.forEach((s, si) => {
      const v = s.values[ci] ?? 0;
      const w = max > 0 ? Math.max(v > 0 ? 1 : 0, (v / max) * plotWidth) : 0;
      const y = y0 + si * BAR_HEIGHT;
      const title = `${category}${series.length > 1 ? ` — ${s.name}` : ''}: ${format(v)}`;
      marks.push(`<rect class="bar" x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${BAR_HEIGHT - 2}" fill="${PALETTE[si % PALETTE.length]}"><title>${escapeXml(title)}</title></rect>`);
      marks.push(`<text x="${(labelWidth + w + 4).toFixed(1)}" y="${y + BAR_HEIGHT - 4}">${escapeXml(format(v))}</text>`);
    });
  });
  return svg(width, height, [...(series.length > 1 ? legendMarks(series.map((s) => s.name), labelWidth) : []), ...marks]);
}

/** Lines over a time axis, one per series, with dots at the data points. */
export function lineChart(series: readonly TimeSeries[], format: (v: number) => string, width = 760, height = 320): string {
  const left = 90;
  const right = 20;
  const top = 10 + Math.ceil(series.length / 4) * (FONT + 8);
  const bottom = 40;
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p.t));
  const t1 = Math.max(...all.map((p) => p.t));
  const yMax = niceCeiling(Math.max(0, ...all.map((p) => p.v)));
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const x = (t: number): number => left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * plotW : plotW / 2);
  const y = (v: number): number => top + plotH - (yMax > 0 ? (v / yMax) * plotH : 0);
  const marks: string[] = [];
  // Axes and grid: five horizontal lines, and time labels at up to six points.
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    marks.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}"/>`);
    marks.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${escapeXml(format(v))}</text>`);
  }
  const times = [...new Set(all.map((p) => p.t))].sort((a, b) => a - b);
  const step = Math.max(1, Math.ceil(times.length / 6));
  times.filter((_, i) => i % step === 0).forEach((t) => {
    marks.push(`<text x="${x(t).toFixed(1)}" y="${height - bottom + 16}" text-anchor="middle">${escapeXml(shortTime(t, t1 - t0))}</text>`);
  });
  marks.push(`<text x="${left + plotW / 2}" y="${height - 6}" text-anchor="middle" class="axis-title">window start (UTC)</text>`);
  series.forEach((s, si) => {
    const colour = PALETTE[si % PALETTE.length]!;
    const d = s.points.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
    marks.push(`<path class="line" d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const p of s.points) {
      marks.push(`<circle cx="${x(p.t).toFixed(1)}" cy="${y(p.v).toFixed(1)}" r="3" fill="${colour}"><title>${escapeXml(`${s.name} at ${new Date(p.t).toISOString()}: ${format(p.v)}`)}</title></circle>`);
    }
  });
  return svg(width, height, [...legendMarks(series.map((s) => s.name), left), ...marks]);
}

function legendMarks(names: readonly string[], x0: number): string[] {
  const perRow = 4;
  const cell = 170;
  return names.flatMap((name, i) => {
    const x = x0 + (i % perRow) * cell;
    const y = 4 + Math.floor(i / perRow) * (FONT + 8);
    return [
      `<rect x="${x}" y="${y}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${x + 16}" y="${y + 11}">${escapeXml(name.length > 22 ? `${name.slice(0, 21)}…` : name)}</text>`,
    ];
  });
}

function svg(width: number, height: number, body: readonly string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" font-size="${FONT}" role="img">${body.join('')}</svg>`;
}

/** The next 1, 2 or 5 × 10^n at or above v, so the axis ticks are round numbers. */
function niceCeiling(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function shortTime(t: number, spanMs: number): string {
  const iso = new Date(t).toISOString();
  return spanMs >= 86_400_000 ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 16);
}
