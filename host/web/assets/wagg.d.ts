// Type declarations of wagg.js, the client of wagg's live protocol and
// history (docs/protocol.md). Served by a wagg host at /wagg.d.ts.

/** A key column or metric type of the aggregator's schema. */
export type ColumnType = 'int64' | 'float64' | 'string';

export interface Column {
  name: string;
  type: ColumnType;
}

export interface Metric {
  name: string;
  kind: 'count' | 'sum' | 'min' | 'max';
  type: 'int64' | 'float64';
}

export interface Window {
  name: string;
  kind: 'tumbling' | 'hopping' | 'global';
  size_ms?: number;
  slide_ms?: number;
}

/** One merged row: the value of one group in one pane of a window. */
export interface Row {
  window: string;
  /** Unix ms; 0 for a global window. */
  start: number;
  /** Unix ms, exclusive; 0 for a global window. */
  end: number;
  key: Record<string, number | string>;
  /** null stands for a float metric that is NaN or infinite. */
  values: Record<string, number | null>;
  final: boolean;
}

/** The fields of a subscribe frame (docs/protocol.md, "subscribe"). */
export interface Subscribe {
  aggregator: string;
  windows?: string[];
  keys?: Record<string, Array<number | string>>;
  panes?: number;
  interval_ms?: number;
  token?: string;
}

/** A frame of the server (docs/protocol.md, "Server frames"). */
export interface Frame {
  type: 'snapshot' | 'resumed' | 'delta' | 'error' | 'pong' | string;
  aggregator?: string;
  epoch?: string;
  seq: number;
  prev: number;
  windows?: Window[];
  keys?: Column[];
  metrics?: Metric[];
  rows?: Row[];
  evicted?: Array<{ window: string; start: number }>;
  code?: string;
  message?: string;
}

export type Status = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'error';

export interface LiveOptions {
  /** Bearer token with live:<aggregator>; put in the subscription. */
  token?: string;
  /** "ws" (default) or "sse": the same frames over Server-Sent Events. */
  transport?: 'ws' | 'sse';
  /** Closed panes of each tumbling or hopping window kept (0: as many as the hub keeps). */
  keepClosed?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Called when the subscription's token expired (close 4010); resolves to a new one. */
  refreshToken?: () => string | Promise<string>;
  onChange?: (live: Live) => void;
  onStatus?: (status: Status, detail?: string) => void;
  onError?: (frame: Frame) => void;
}

/** The pane map of a window: start -> (keyID -> row), with the count of rows not final. */
export type Pane = Map<string, Row> & { open: number };

/**
 * A subscription that reconnects and resumes by itself. Events: "status"
 * (status, detail), "change" (live), after every applied frame, "snapshot"
 * (live, frame), before a snapshot's rows are applied, "row" (row, old),
 * for every row applied, and "error" (frame).
 */
export class Live {
  constructor(url: string, sub: Subscribe, opts?: LiveOptions);
  readonly epoch: string | null;
  readonly seq: number;
  readonly windows: Window[];
  readonly keys: Column[];
  readonly metrics: Metric[];
  /** True between a snapshot (or resumed) and the next disconnect. */
  readonly live: boolean;
  readonly status: Status;
  /** Why the status is what it is (the last close reason or refusal). */
  readonly detail: string | undefined;
  /** Connections after the first one. */
  readonly reconnects: number;
  /** Reconnects the hub answered with "resumed" (no snapshot needed). */
  readonly resumes: number;
  start(): void;
  stop(): void;
  rows(): Row[];
  panes(window: string): Map<number, Pane>;
  /** Whether every row of a pane is final. */
  closed(window: string, start: number): boolean;
  on(event: 'status', fn: (status: Status, detail?: string) => void): () => void;
  on(event: 'change', fn: (live: Live) => void): () => void;
  on(event: 'snapshot', fn: (live: Live, frame: Frame) => void): () => void;
  on(event: 'row', fn: (row: Row, old: Row | undefined) => void): () => void;
  on(event: 'error', fn: (frame: Frame) => void): () => void;
}

/** The WebSocket URL of a path on this page's server (default /v1/live). */
export function liveURL(path?: string, base?: string): string;
/** The SSE URL of a path on this page's server (default /v1/live/sse). */
export function sseURL(path?: string, base?: string): string;
/** The identity of a group key: JSON of its values in column order. */
export function keyID(key: Record<string, number | string>, cols: Column[]): string;
/** Two values of a metric merged by its kind (sum for count and sum). */
export function merge(kind: Metric['kind'], a: number | null | undefined, b: number | null | undefined): number | null | undefined;
/** A string quoted for ClickHouse SQL. */
export function sqlString(s: string): string;

/**
 * A refusal of the API: its code and message verbatim, and the HTTP status (0: no answer,
 * code "unavailable"). Series also throws code "bad_filter" for a filter it cannot put in SQL.
 */
export class QueryError extends Error {
  readonly status: number;
  readonly code: string;
}

export interface CallOptions {
  token?: string;
  /** The host's URL (default: this page's). */
  base?: string;
  signal?: AbortSignal;
}

/** Calls the host's HTTP API; throws QueryError on a refusal. */
export function api<T = unknown>(
  path: string,
  opts?: CallOptions & { method?: string; body?: unknown; contentType?: string },
): Promise<T>;

export interface QueryResult {
  columns: Array<{ name: string; type: string }>;
  rows: unknown[][];
  truncated: boolean;
  elapsed_ms: number;
}

/** Read-only SQL through POST /v1/query (scope sql:read). */
export function query(sql: string, opts?: CallOptions): Promise<QueryResult>;

export interface SeriesOptions extends CallOptions {
  /** The subscription that continues the history (unfiltered, or with the same key filter). */
  live: Live;
  /** The deployment's view, "database.name" (the table of GET /v1/deployments). */
  table: string;
  /** A tumbling or hopping window of the aggregator. */
  window: string;
  metric: string;
  /** How far back the series reaches (default 5 minutes). */
  rangeMs?: number;
  /** Only the groups whose key columns take these values (as the subscribe "keys"). */
  filter?: Record<string, Array<number | string>>;
  /** How many groups to track, the largest over the range (default 5). */
  top?: number;
  /** The groups to track instead of the top ones. */
  keys?: Array<Record<string, number | string>>;
  /** How often incomplete history is asked again (default 1000 ms). */
  retryMs?: number;
}

export interface JoinedPane {
  start: number;
  /** The metric merged over every group that matches the filter. */
  total: number | null;
  final: boolean;
  source: 'history' | 'live';
  /** The tracked groups' values, by keyID. */
  values: Map<string, number | null>;
}

/**
 * One metric of a windowed window over the last rangeMs: history from
 * ClickHouse before the seam, live deltas from it on (docs/protocol.md,
 * "Joining history and live"). Event: "change" (series).
 */
export class Series {
  constructor(opts: SeriesOptions);
  /** Panes starting before it come from history, the others live; null until the first snapshot. */
  readonly seam: number | null;
  /** Every pane before the seam is in ClickHouse (the checkpoints' watermarks passed the seam). */
  readonly complete: boolean;
  /** The last refusal of a history query. */
  readonly error: QueryError | Error | null;
  readonly tracked: Array<{ key: Record<string, number | string>; id: string; label: string }> | null;
  panes(): JoinedPane[];
  /** Columns for a chart: [x (Unix s), total, ...tracked], their labels, and each pane's source. */
  columns(): { data: Array<Array<number | null>>; labels: string[]; sources: Array<'history' | 'live'> };
  stop(): void;
  on(event: 'change', fn: (s: Series) => void): () => void;
}
