// Chart libraries with 100k-row series in headless Chromium: bundle size
// (esbuild, minified), time to the first drawn frame, and the time of a
// redraw after new data (the live case), for uPlot, ECharts and Chart.js.
//   cd bench/web && npm ci && node charts.mjs [rows] [series]
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { mkdtempSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';

const ROWS = Number(process.argv[2] || 100_000);
const SERIES = Number(process.argv[3] || 4);
const UPDATES = 20;
const dir = mkdtempSync(join(tmpdir(), 'wagg-charts-'));

// Each entry exposes draw(el, xs, ys) -> redraw(xs, ys) on window.
const entries = {
  uplot: `import uPlot from 'uplot';
window.draw = (el, xs, ys) => {
  const u = new uPlot({ width: 1000, height: 400, series: [{}, ...ys.map((_, i) => ({ label: 's' + i, stroke: 'hsl(' + i * 70 + ',70%,50%)' }))] }, [xs, ...ys], el);
  return (xs, ys) => u.setData([xs, ...ys]);
};`,
  echarts: `import * as echarts from 'echarts';
window.draw = (el, xs, ys) => {
  el.style.width = '1000px'; el.style.height = '400px';
  const c = echarts.init(el, null, { renderer: 'canvas' });
  const opt = (xs, ys) => ({ animation: false, xAxis: { type: 'time' }, yAxis: { type: 'value' },
    series: ys.map((y) => ({ type: 'line', showSymbol: false, sampling: 'lttb', large: true, data: xs.map((x, i) => [x * 1000, y[i]]) })) });
  c.setOption(opt(xs, ys));
  return (xs, ys) => c.setOption(opt(xs, ys));
};`,
  chartjs: `import { Chart, LineController, LineElement, PointElement, LinearScale, Decimation } from 'chart.js';
Chart.register(LineController, LineElement, PointElement, LinearScale, Decimation);
window.draw = (el, xs, ys) => {
  const cv = document.createElement('canvas'); cv.width = 1000; cv.height = 400; el.append(cv);
  const data = (xs, ys) => ({ datasets: ys.map((y) => ({ data: xs.map((x, i) => ({ x, y: y[i] })), pointRadius: 0, borderWidth: 1 })) });
  const c = new Chart(cv, { type: 'line', data: data(xs, ys), options: { animation: false, responsive: false, parsing: false, normalized: true,
    scales: { x: { type: 'linear' } }, plugins: { decimation: { enabled: true, algorithm: 'lttb' } } } });
  return (xs, ys) => { c.data = data(xs, ys); c.update('none'); };
};`,
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
console.log(`${ROWS} rows x ${SERIES} series, ${UPDATES} redraws; median of the redraws`);
console.log('library  bundle(min)  gzip     first-draw-ms  redraw-ms  heap-MiB');
for (const [name, src] of Object.entries(entries)) {
  const entry = join(dir, name + '.js');
  writeFileSync(entry, src);
  const out = join(dir, name + '.bundle.js');
  await build({ entryPoints: [entry], bundle: true, minify: true, format: 'iife', outfile: out, nodePaths: [join(process.cwd(), 'node_modules')], logLevel: 'error' });
  const js = readFileSync(out);
  const page = await browser.newPage({ viewport: { width: 1100, height: 500 } });
  await page.setContent('<div id="c"></div>');
  await page.addScriptTag({ content: js.toString() });
  const r = await page.evaluate(async ([rows, series, updates]) => {
    const frame = () => new Promise((res) => requestAnimationFrame(() => requestAnimationFrame(res)));
    const mk = (off) => {
      const xs = new Float64Array(rows), ys = [];
      for (let i = 0; i < rows; i++) xs[i] = 1.7e9 + i + off;
      for (let s = 0; s < series; s++) {
        const y = new Float64Array(rows);
        for (let i = 0; i < rows; i++) y[i] = 1000 + 500 * Math.sin((i + off) / (500 + s * 97)) + ((i * 7919 + s) % 113);
        ys.push(y);
      }
      return [Array.from(xs), ys.map((y) => Array.from(y))];
    };
    const [xs, ys] = mk(0);
    const t0 = performance.now();
    const redraw = window.draw(document.getElementById('c'), xs, ys);
    await frame();
    const first = performance.now() - t0;
    const times = [];
    for (let u = 1; u <= updates; u++) {
      const [x2, y2] = mk(u);
      const t = performance.now();
      redraw(x2, y2);
      await frame();
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    return { first, redraw: times[times.length >> 1], heap: performance.memory ? performance.memory.usedJSHeapSize / 1048576 : NaN };
  }, [ROWS, SERIES, UPDATES]);
  console.log(`${name.padEnd(8)} ${String(js.length).padStart(10)}  ${String(gzipSync(js).length).padStart(7)}  ${r.first.toFixed(0).padStart(13)}  ${r.redraw.toFixed(0).padStart(9)}  ${r.heap.toFixed(0).padStart(8)}`);
  await page.close();
}
await browser.close();
