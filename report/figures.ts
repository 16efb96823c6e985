// Figures as Vega-Lite specs, rendered to SVG in Node by Vega's headless renderer (no browser,
// no canvas, no network: data is always inline).
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface Figure {
  name: string; // file stem: figures/<name>.svg
  title: string;
  spec: TopLevelSpec;
}

const WIDTH = 360;
const HEIGHT = 200;

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// One line per series over an integer x (round or step), with points.
export function lineChart(o: {
  title: string;
  x: string;
  y: string;
  values: { x: number; y: number; series: string }[];
  seriesTitle?: string;
  zeroBased?: boolean;
}): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: o.title,
    width: WIDTH,
    height: HEIGHT,
    background: 'white',
    data: { values: o.values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: o.x, axis: { tickMinStep: 1, format: 'd' } },
      y: { field: 'y', type: 'quantitative', title: o.y, scale: { zero: o.zeroBased ?? false } },
      color: { field: 'series', type: 'nominal', title: o.seriesTitle ?? null },
    },
  };
}

// Means with error bars (lo..hi: mean ± sd, or an interval) per series over an integer x.
export function errorBarChart(o: {
  title: string;
  x: string;
  y: string;
  seriesTitle?: string;
  values: { x: number; series: string; mean: number; lo: number; hi: number }[];
}): TopLevelSpec {
  const x = {
    field: 'x',
    type: 'quantitative' as const,
    title: o.x,
    axis: { tickMinStep: 1, format: 'd' },
  };
  const color = { field: 'series', type: 'nominal' as const, title: o.seriesTitle ?? null };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: o.title,
    width: WIDTH,
    height: HEIGHT,
    background: 'white',
    data: { values: o.values },
    layer: [
      {
        mark: { type: 'line', point: true },
        encoding: {
          x,
          color,
          y: { field: 'mean', type: 'quantitative', title: o.y, scale: { zero: false } },
        },
      },
      {
        mark: { type: 'rule', strokeWidth: 2 },
        encoding: { x, color, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } },
      },
    ],
  };
}

// Per-step training metrics: one panel per metric, one line per round.
export function stepsChart(
  title: string,
  values: { step: number; round: string; metric: string; value: number }[],
): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    background: 'white',
    data: { values },
    facet: { row: { field: 'metric', type: 'nominal', title: null } },
    spec: {
      width: WIDTH,
      height: 120,
      mark: { type: 'line', strokeWidth: 1 },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step' },
        y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        color: { field: 'round', type: 'nominal', title: 'round' },
      },
    },
    resolve: { scale: { y: 'independent' } },
  };
}
