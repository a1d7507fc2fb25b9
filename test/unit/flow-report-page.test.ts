// `mirrorflow flows report --out FILE.html` opened in headless Chromium (Debian's
// chromium): the page renders its charts (screenshot kept in test/.out/flow-report/,
// checked for the charts' colours), its DOM holds the figures computed here from the
// records, the console stays clean, and nothing is fetched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlowRecord } from '../../agent/flow/record.js';
import { PALETTE } from '../../agent/analysis/svg-charts.js';
import { run } from '../../agent/exec.js';
import { AGENT_CLI, ensureBuilt, REPO_ROOT } from '../e2e/helpers/build.js';
import { writeFixture, type Fixture } from '../helpers/flow-fixture.js';
import { countColour, countNonWhite, decodePng } from '../helpers/png.js';

const CHROMIUM = '/usr/bin/chromium';
const OUT_DIR = join(REPO_ROOT, 'test/.out/flow-report');
const WIDTH = 1000;
const HEIGHT = 4200;

let fx: Fixture;
let profile: string;
let page: string;

/** Runs headless Chromium on a file with a throwaway profile, no network, logging to stderr. */
async function chromium(args: readonly string[], file: string): Promise<{ stdout: string; stderr: string }> {
  return run(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${profile}`,
    '--host-resolver-rules=MAP * ~NOTFOUND', '--no-first-run', '--enable-logging=stderr', '--v=0',
    ...args, `file://${file}`,
  ]);
}

/** Console messages Chromium logged for the page (its INFO:CONSOLE lines). */
function consoleLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /CONSOLE/.test(l));
}

beforeAll(async () => {
  await ensureBuilt();
  fx = await writeFixture();
  profile = await mkdtemp(join(tmpdir(), 'mirrorflow-chromium-'));
  await mkdir(OUT_DIR, { recursive: true });
  page = join(OUT_DIR, 'report.html');
  await run(process.execPath, [AGENT_CLI, 'flows', 'report', '--out', page, '--files', `${fx.dir}/flowlog.jsonl*`]);
}, 120_000);

afterAll(async () => {
  await rm(fx.dir, { recursive: true, force: true });
  await rm(profile, { recursive: true, force: true });
});

function sumBy(rs: readonly FlowRecord[], f: (r: FlowRecord) => number): number {
  return rs.reduce((n, r) => n + f(r), 0);
}

describe('the HTML report in headless Chromium', () => {
  it('is one file that refers to nothing outside itself', async () => {
    const html = await readFile(page, 'utf8');
    expect(html.match(/(?:src|href)="(?!#)[^"]*"/g)).toBeNull();
    expect(html.match(/https?:\/\/[^"\s<]*/g)).toEqual(expect.arrayContaining(['http://www.w3.org/2000/svg']));
    expect(new Set(html.match(/https?:\/\/[^"\s<]*/g))).toEqual(new Set(['http://www.w3.org/2000/svg']));
    expect(html).not.toMatch(/<script|<link|@import|url\(/i);
  });

  it('renders its charts: a screenshot with every chart colour in it', async () => {
    const shot = join(OUT_DIR, 'report.png');
    await rm(shot, { force: true });
    await chromium([`--window-size=${WIDTH},${HEIGHT}`, `--screenshot=${shot}`], page);
    const img = decodePng(await readFile(shot));
    expect([img.width, img.height]).toEqual([WIDTH, HEIGHT]);
    // Text and tables alone would not reach these counts: bars and lines do.
    expect(countNonWhite(img)).toBeGreaterThan(0.05 * WIDTH * HEIGHT);
    expect(countColour(img, PALETTE[0]!)).toBeGreaterThan(5000); // single-series bars, first line
    expect(countColour(img, PALETTE[1]!)).toBeGreaterThan(500); // second series: zero windows, SKIPDATA, a second destination
    expect(countColour(img, PALETTE[2]!)).toBeGreaterThan(100); // a third bandwidth line
  }, 60_000);

  it('holds the figures computed from the records, and logs nothing to the console', async () => {
    const { stdout: dom, stderr } = await chromium(['--dump-dom'], page);
    await writeFile(join(OUT_DIR, 'report.dom.html'), dom);
    expect(consoleLines(stderr)).toEqual([]);
    const cells = (report: string, col: string): string[] => {
      const section = new RegExp(`<table data-report="${report}">([\\s\\S]*?)</table>`).exec(dom)?.[1] ?? '';
      return [...section.matchAll(new RegExp(`data-col="${col}" data-value="([^"]*)"`, 'g'))].map((m) => m[1]!);
    };
    const ok = fx.records.filter((r) => r['log-status'] === 'OK');
    // Top talker: the pair with the most bytes.
    const pairs = new Map<string, number>();
    for (const r of ok) pairs.set(`${r.srcaddr} ${r.dstaddr}`, (pairs.get(`${r.srcaddr} ${r.dstaddr}`) ?? 0) + r.bytes!);
    const [topPair, topBytes] = [...pairs.entries()].sort((a, b) => b[1] - a[1])[0]!;
    expect(`${cells('top-talkers', 'srcaddr')[0]} ${cells('top-talkers', 'dstaddr')[0]}`).toBe(topPair);
    expect(cells('top-talkers', 'bytes')[0]).toBe(String(topBytes));
    // Rejected packets by port, SSH first.
    const rejected = ok.filter((r) => r.action === 'REJECT');
    expect(cells('rejected', 'dstport')).toEqual(['22', '3389']);
    expect(cells('rejected', 'packets')).toEqual([22, 3389].map((p) => String(sumBy(rejected.filter((r) => r.dstport === p), (r) => r.packets!))));
    // Gaps per interface.
    expect(cells('gaps', 'eni-id')).toEqual(['eth0', 'eth1']);
    expect(cells('gaps', 'skipped-packets')).toEqual(['17', '5']);
    expect(cells('gaps', 'nodata-windows')).toEqual(['0', '2']);
    // Bandwidth: the rates of all rows add up to the records' bytes × 8 ÷ window.
    const rates = cells('bandwidth', 'bandwidth').map(Number);
    expect(rates.reduce((a, b) => a + b, 0)).toBeCloseTo(sumBy(ok, (r) => (r.bytes! * 8) / (r.end - r.start)), 3);
    // TCP health: the peer with five times the retransmissions leads.
    expect(cells('tcp-health', 'peer')[0]).toBe('10.0.0.3');
    expect(cells('tcp-health', 'retrans')[0]).toBe(String(sumBy(ok.filter((r) => r.protocol === 6 && (r.srcaddr === '10.0.0.3' || r.dstaddr === '10.0.0.3')), (r) => r.retrans!)));
    // The overview tells the reader what was read and what was skipped.
    expect(dom).toMatch(new RegExp(`id="overview-records">${fx.records.length.toLocaleString('en-US')} `));
    expect(dom).toMatch(/id="overview-skipped" class="warn">1 incomplete line/);
    // Every chart is an SVG with marks in it.
    expect((dom.match(/<svg[^>]*class="chart"/g) ?? []).length).toBe(5);
  }, 60_000);

  it('would see a console error: the same check on a page that logs one', async () => {
    const bad = join(OUT_DIR, 'console-error.html');
    await writeFile(bad, '<!doctype html><title>x</title><script>console.error("report check: boom")</script>');
    const { stderr } = await chromium(['--dump-dom'], bad);
    expect(consoleLines(stderr).join('\n')).toContain('report check: boom');
  }, 60_000);
});
