// One report, two renderings: report.md (tables, figures linked as figures/<name>.svg) and a
// self-contained report.html (the same tables, every figure's SVG inline, no scripts, no network).
import { join } from 'node:path';
import { writeFileAtomic } from '../lib/atomic.ts';
import { renderSvg, type Figure } from './figures.ts';

export interface Table {
  head: string[];
  align?: ('l' | 'r')[]; // default: first column left, the rest right
  rows: string[][];
}

export type Block =
  | { kind: 'heading'; text: string }
  | { kind: 'text'; text: string }
  | { kind: 'table'; table: Table }
  | { kind: 'figure'; figure: Figure };

export interface ReportDoc {
  title: string;
  blocks: Block[];
}

export const fmt = (x: number | null | undefined, digits = 3): string =>
  x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);

function tableMarkdown(t: Table): string[] {
  const align = t.head.map((_, i) =>
    (t.align?.[i] ?? (i === 0 ? 'l' : 'r')) === 'r' ? '---:' : '---',
  );
  return [
    `| ${t.head.join(' | ')} |`,
    `|${align.join('|')}|`,
    ...t.rows.map((r) => `| ${r.join(' | ')} |`),
  ];
}

function toMarkdown(doc: ReportDoc): string {
  const out = [`# ${doc.title}`];
  for (const b of doc.blocks) {
    out.push('');
    if (b.kind === 'heading') out.push(`## ${b.text}`);
    else if (b.kind === 'text') out.push(b.text);
    else if (b.kind === 'table') out.push(...tableMarkdown(b.table));
    else out.push(`![${b.figure.title}](figures/${b.figure.name}.svg)`);
  }
  return out.join('\n') + '\n';
}

const esc = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
// Markdown's inline code and bold, the only inline markup the reports use.
const inline = (s: string) =>
  esc(s)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<b>$1</b>');

function tableHtml(t: Table): string {
  const cls = (i: number) => ((t.align?.[i] ?? (i === 0 ? 'l' : 'r')) === 'r' ? ' class="r"' : '');
  const head = t.head.map((h, i) => `<th${cls(i)}>${inline(h)}</th>`).join('');
  return (
    `<table><thead><tr>${head}</tr></thead><tbody>` +
    t.rows
      .map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${inline(c)}</td>`).join('')}</tr>`)
      .join('') +
    '</tbody></table>'
  );
}

const STYLE = `body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 \
1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px \
8px}th{background:#f4f4f4}
.r{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}figcaption{color:#555}
code{background:#f4f4f4;padding:0 3px}`;

function toHtml(doc: ReportDoc, svgs: Map<string, string>): string {
  const body = doc.blocks.map((b) => {
    if (b.kind === 'heading') return `<h2>${inline(b.text)}</h2>`;
    if (b.kind === 'text') return `<p>${inline(b.text)}</p>`;
    if (b.kind === 'table') return tableHtml(b.table);
    const caption = `<figcaption>${inline(b.figure.title)}</figcaption>`;
    return `<figure>${svgs.get(b.figure.name)}${caption}</figure>`;
  });
  return (
    `<!doctype html>\n<html lang="en"><head><meta ` +
    `charset="utf-8"><title>${esc(doc.title)}</title>` +
    `<style>${STYLE}</style></head>\n<body><h1>${inline(doc.title)}</h1>\n` +
    `${body.join('\n')}\n</body></html>\n`
  );
}

interface WrittenReport {
  markdown: string;
  html: string;
  figures: string[]; // the SVG files
}

// Writes report.md, report.html and figures/<name>.svg into `dir`, each atomically.
export async function writeReportFiles(dir: string, doc: ReportDoc): Promise<WrittenReport> {
  const svgs = new Map<string, string>();
  const figures: string[] = [];
  for (const b of doc.blocks) {
    if (b.kind !== 'figure') continue;
    const svg = await renderSvg(b.figure.spec);
    svgs.set(b.figure.name, svg);
    const file = join(dir, 'figures', `${b.figure.name}.svg`);
    await writeFileAtomic(file, svg);
    figures.push(file);
  }
  const markdown = join(dir, 'report.md');
  const html = join(dir, 'report.html');
  await writeFileAtomic(markdown, toMarkdown(doc));
  await writeFileAtomic(html, toHtml(doc, svgs));
  return { markdown, html, figures };
}
