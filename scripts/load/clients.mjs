// Raw y-websocket protocol clients for the load benchmark (scripts/load.py).
//
// One Node process runs every client of one scenario against one server. It is started with one
// argument, the scenario as JSON ({scenario, url, ...knobs}), and talks to its parent in JSON
// lines: on stdout {"event": "checkpoint", "name", ...} (the parent samples the server, then
// writes one line on stdin to let it go on), {"event": "log", "msg"} and finally
// {"event": "result", ...}. Every phase has a deadline; the process ends by itself.
//
// The clients speak the protocol directly (one message per frame): they send sync step 1 with
// their state vector on open, answer the server's sync step 1 with a sync step 2 (an empty
// update, or the writer's Y.Doc), and count what they receive. Writers are real Y.Docs whose
// inserted text carries a marker `#<writer>:<seq>#`; receivers find markers by scanning the
// bytes of every sync step 2 / update frame (a merged update can hold several), and a marker's
// latency is its receive time minus its send time, both taken from this process's hrtime.
// Awareness clients (scenario awareness) have no Y.Doc: they send awareness updates whose state
// carries the marker, and receivers scan awareness frames the same way.
// With `tokens_file` (a JSON array of tokens) client n connects with `?yauth=<token n>`.
import WebSocket from 'ws'
import { readFileSync } from 'node:fs'
import * as Y from 'yjs'
import * as readline from 'node:readline'
import { monitorEventLoopDelay } from 'node:perf_hooks'

const cfg = JSON.parse(process.argv[2])
const tokens = cfg.tokens_file ? JSON.parse(readFileSync(cfg.tokens_file, 'utf8')) : null
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const log = (msg) => emit({ event: 'log', msg })
const now = () => Number(process.hrtime.bigint()) / 1e6 // ms, monotonic
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

// --- talking to the parent -------------------------------------------------------------------

const stdinLines = []
let stdinWaiter = null
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (stdinWaiter) { const w = stdinWaiter; stdinWaiter = null; w(line) } else stdinLines.push(line)
}).on('close', () => { if (!stdinLines.length) stdinLines.push('eof'); if (stdinWaiter) stdinWaiter('eof') })
const nextLine = () => stdinLines.length
  ? Promise.resolve(stdinLines.shift())
  : new Promise(resolve => { stdinWaiter = resolve })

/** Tell the parent where we are and wait until it has sampled the server. */
const checkpoint = async (name, data = {}) => {
  emit({ event: 'checkpoint', name, t: now(), ...data })
  const line = await nextLine()
  if (line !== 'go') throw new Error(`parent said ${JSON.stringify(line)} at ${name}`)
}

// the whole process is bounded: the parent computes this from the scenario's knobs
setTimeout(() => {
  emit({ event: 'error', error: `client process deadline of ${cfg.deadline_s} s passed` })
  process.exit(3)
}, cfg.deadline_s * 1000).unref()

// --- the wire ----------------------------------------------------------------------------------

const varUint = (n) => {
  const out = []
  while (n > 0x7f) { out.push(0x80 | (n & 0x7f)); n = Math.floor(n / 128) }
  out.push(n)
  return out
}

const readVarUint = (buf, pos) => {
  let n = 0; let mult = 1
  for (;;) {
    const b = buf[pos++]
    n += (b & 0x7f) * mult
    if (b < 0x80) return [n, pos]
    mult *= 128
  }
}

/** A sync message: 0, sub (0 step 1, 1 step 2, 2 update), varUint8Array payload. */
const syncFrame = (sub, payload) => {
  const head = Buffer.from([0, sub, ...varUint(payload.length)])
  return Buffer.concat([head, payload])
}

const EMPTY_STEP1 = syncFrame(0, Uint8Array.of(0)) // empty state vector
const EMPTY_STEP2 = syncFrame(1, Uint8Array.of(0, 0)) // empty update (what y-websocket sends)

// --- latency bookkeeping -----------------------------------------------------------------------

const SEQ_LIMIT = 1e7
const sentAt = new Map() // marker key -> send time (ms); only markers of the measured window
const expectedBy = new Map() // marker key -> how many receivers should see it
let latencies = []
let received = 0 // first receipts of measured markers
let duplicates = 0 // the same marker received again by the same client

/** Find every `#<writer>:<seq>#` in a frame. */
const scanMarkers = (buf, start, onMarker) => {
  const end = buf.length
  let i = buf.indexOf(35, start)
  while (i !== -1) {
    let j = i + 1; let w = 0; let dw = 0
    while (j < end && buf[j] >= 48 && buf[j] <= 57 && dw < 9) { w = w * 10 + buf[j] - 48; j++; dw++ }
    if (dw > 0 && buf[j] === 58) {
      j++
      let s = 0; let ds = 0
      while (j < end && buf[j] >= 48 && buf[j] <= 57 && ds < 8) { s = s * 10 + buf[j] - 48; j++; ds++ }
      if (ds > 0 && buf[j] === 35) {
        onMarker(w, s)
        i = buf.indexOf(35, j + 1)
        continue
      }
    }
    i = buf.indexOf(35, i + 1)
  }
}

// --- one client --------------------------------------------------------------------------------

let clientCount = 0

class Client {
  /**
   * @param {string} room
   * @param {{writerId?: number, track?: boolean, aware?: boolean}} opts  writerId: this client
   *   writes (has a Y.Doc, or with `aware` sends awareness updates); track: look for markers in
   *   what it receives
   */
  constructor (room, { writerId = -1, track = false, aware = false } = {}) {
    this.id = clientCount++
    this.room = room
    this.writerId = writerId
    this.doc = writerId >= 0 && !aware ? new Y.Doc() : null
    this.awarenessId = 100000 + this.id // what a browser's Y.Doc clientID is
    this.awarenessClock = 0
    this.token = tokens ? tokens[this.id % tokens.length] : null
    this.track = track
    this.seen = track ? new Set() : null
    this.seq = 0
    this.echoes = new Map() // own marker key -> waiter (used while building a document)
    this.syncBytes = 0 // bytes of sync step 2 and update frames received
    this.frames = 0
    this.step2s = 0
    this.syncedAt = null
    this.openedAt = null
    this.closeCode = null
    this.ws = null
    this.pendingKey = -1
    if (this.doc) {
      this.doc.on('update', (update) => {
        if (this.pendingKey >= 0 && this.measuring) sentAt.set(this.pendingKey, now())
        this.send(syncFrame(2, update))
      })
    }
  }

  send (frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame)
  }

  /** Connect; resolves once a sync step 2 arrived (synced), rejects on close/timeout. */
  open (timeoutMs) {
    this.startedAt = now()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`client ${this.id} not synced after ${timeoutMs} ms`)), timeoutMs)
      this.onSynced = () => { clearTimeout(timer); resolve(this) }
      const query = this.token ? `?yauth=${this.token}` : ''
      const ws = new WebSocket(`${cfg.url}/${this.room}${query}`, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 })
      this.ws = ws
      ws.on('open', () => {
        this.openedAt = now()
        ws.send(this.doc ? syncFrame(0, Y.encodeStateVector(this.doc)) : EMPTY_STEP1)
      })
      ws.on('message', (data) => this.onFrame(data))
      ws.on('error', (err) => { this.error = String(err.message || err) })
      ws.on('close', (code) => {
        this.closeCode = code
        if (this.syncedAt === null) { clearTimeout(timer); reject(new Error(`client ${this.id} closed (${code}) before sync: ${this.error || ''}`)) }
      })
    })
  }

  onFrame (buf) {
    this.frames++
    if (buf[0] === 1) { // awareness: only the awareness scenario's markers are in there
      if (this.track) scanMarkers(buf, 1, (w, s) => this.onMarker(w, s))
      return
    }
    if (buf[0] !== 0) return // the rest: nothing to do for raw clients
    const sub = buf[1]
    if (sub === 0) { // the server's sync step 1: answer with what we have that it lacks
      if (this.doc) {
        const [len, pos] = readVarUint(buf, 2)
        const sv = buf.subarray(pos, pos + len)
        this.send(syncFrame(1, Y.encodeStateAsUpdate(this.doc, sv)))
      } else {
        this.send(EMPTY_STEP2)
      }
      return
    }
    if (sub !== 1 && sub !== 2) return
    this.syncBytes += buf.length
    if (sub === 1) {
      this.step2s++
      if (this.syncedAt === null) {
        this.syncedAt = now()
        this.onSynced()
      }
    }
    if (this.track || this.echoes.size) scanMarkers(buf, 2, (w, s) => this.onMarker(w, s))
  }

  onMarker (w, s) {
    const key = w * SEQ_LIMIT + s
    if (w === this.writerId) {
      const waiter = this.echoes.get(key)
      if (waiter) { this.echoes.delete(key); waiter() }
      return
    }
    if (!this.track) return
    if (this.seen.has(key)) { duplicates++; return }
    this.seen.add(key)
    const t = sentAt.get(key)
    if (t === undefined) return // sent outside the measured window
    received++
    latencies.push(now() - t)
  }

  /** Insert one marked piece of text at the end of this writer's document (sends one update). */
  write (padding) {
    const key = this.writerId * SEQ_LIMIT + this.seq
    const text = `#${this.writerId}:${this.seq}#${padding}`
    this.seq++
    this.pendingKey = key
    const t = this.doc.getText('t')
    t.insert(t.length, text)
    this.pendingKey = -1
    return key
  }

  /** Send one awareness update (one state, the next clock) whose state carries a marker. */
  sendAwareness () {
    const key = this.writerId * SEQ_LIMIT + this.seq
    const at = (this.seq * 7) % 1000
    const state = Buffer.from(JSON.stringify({
      user: { name: `user-${this.writerId}`, color: '#30bced' },
      cursor: { anchor: at, head: at + 3 },
      m: `#${this.writerId}:${this.seq}#`
    }))
    this.seq++
    this.awarenessClock++
    const update = Buffer.concat([Buffer.from([...varUint(1), ...varUint(this.awarenessId),
      ...varUint(this.awarenessClock), ...varUint(state.length)]), state])
    if (this.measuring) sentAt.set(key, now())
    this.send(Buffer.concat([Buffer.from([1, ...varUint(update.length)]), update]))
    return key
  }

  /** One write of the scenario: a document update, or an awareness update. */
  tick (padding) {
    return this.doc ? this.write(padding) : this.sendAwareness()
  }

  close () {
    if (this.ws) this.ws.terminate()
    if (this.doc) this.doc.destroy()
  }
}

// --- helpers for the scenarios -------------------------------------------------------------------

/** Open clients in batches (a connect storm is the join scenario's business, not the others'). */
const openAll = async (clients, batch, timeoutMs) => {
  for (let i = 0; i < clients.length; i += batch) {
    await Promise.all(clients.slice(i, i + batch).map(c => c.open(timeoutMs)))
  }
}

const padding = (size) => 'x'.repeat(Math.max(0, size))

/**
 * Every writer sends `rate` updates per second for `seconds`, staggered evenly; `measure`
 * decides whether the markers count. `receiversOf(writer)` = how many clients should see them.
 */
const runWriters = async (writers, rate, seconds, measure, receiversOf, pad) => {
  const start = now()
  const end = start + seconds * 1000
  const period = 1000 / rate
  let sent = 0
  await Promise.all(writers.map((w, i) => new Promise(resolve => {
    let next = start + (i / writers.length) * period
    const tick = () => {
      const t = now()
      if (t >= end) { resolve(); return }
      w.measuring = measure
      const key = w.tick(pad)
      w.measuring = false
      sent++
      if (measure) expectedBy.set(key, receiversOf(w))
      next += period
      if (next < t) next = t // we fell behind: do not burst to catch up
      setTimeout(tick, Math.max(0, next - now()))
    }
    setTimeout(tick, Math.max(0, next - now()))
  })))
  return sent
}

/** Wait until every measured marker reached every receiver, or `ms` passed. */
const drain = async (ms) => {
  let expected = 0
  for (const n of expectedBy.values()) expected += n
  const deadline = now() + ms
  while (received < expected && now() < deadline) await sleep(20)
  return expected
}

const percentiles = (values) => {
  if (!values.length) return { n: 0 }
  const sorted = Float64Array.from(values).sort()
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]
  let sum = 0
  for (const v of sorted) sum += v
  return { n: sorted.length, mean: sum / sorted.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] }
}

const loopDelay = monitorEventLoopDelay({ resolution: 5 })

/** The measured window of a fan-out style scenario: warm up, measure, drain, report. */
const measureWriters = async (writers, receiversOf, clients) => {
  const pad = padding(cfg.update_size - 12)
  if (cfg.warmup_s > 0) await runWriters(writers, cfg.rate, cfg.warmup_s, false, receiversOf, pad)
  await sleep(200)
  latencies = []; received = 0; duplicates = 0
  loopDelay.reset(); loopDelay.enable()
  const cpu0 = process.cpuUsage()
  const t0 = now()
  await checkpoint('measure-start')
  const sent = await runWriters(writers, cfg.rate, cfg.duration_s, true, receiversOf, pad)
  const seconds = (now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  await checkpoint('measure-end')
  const expected = await drain(cfg.drain_s * 1000)
  loopDelay.disable()
  const closed = clients.filter(c => c.closeCode !== null).length
  const closeCodes = {}
  for (const c of clients) if (c.closeCode !== null) closeCodes[c.closeCode] = (closeCodes[c.closeCode] || 0) + 1
  return {
    updates_sent: sent,
    updates_per_s: sent / seconds,
    deliveries_expected: expected,
    deliveries: received,
    delivered_pct: expected ? 100 * received / expected : null,
    duplicates,
    latency_ms: percentiles(latencies),
    clients_closed_by_server: closed,
    close_codes: closeCodes,
    client_cpu_pct: 100 * (cpu.user + cpu.system) / 1000 / (seconds * 1000),
    client_loop_delay_p99_ms: loopDelay.percentile(99) / 1e6
  }
}

// --- scenarios -----------------------------------------------------------------------------------

const scenarios = {
  /** (A) one writer, many observers in one room. */
  async fanout () {
    const room = 'fanout'
    const writer = new Client(room, { writerId: 0 })
    const observers = Array.from({ length: cfg.observers }, () => new Client(room, { track: true }))
    const t0 = now()
    await writer.open(cfg.connect_timeout_s * 1000)
    await openAll(observers, cfg.connect_batch, cfg.connect_timeout_s * 1000)
    const connectS = (now() - t0) / 1000
    const result = await measureWriters([writer], () => observers.length, [writer, ...observers])
    return { connect_s: connectS, ...result }
  },

  /** (B) many rooms, every client writes and observes. */
  async rooms () {
    const clients = []
    const perRoom = cfg.clients_per_room
    for (let r = 0; r < cfg.rooms; r++) {
      for (let k = 0; k < perRoom; k++) clients.push(new Client(`room-${r}`, { writerId: clients.length, track: true }))
    }
    const t0 = now()
    await openAll(clients, cfg.connect_batch, cfg.connect_timeout_s * 1000)
    const connectS = (now() - t0) / 1000
    const result = await measureWriters(clients, () => perRoom - 1, clients)
    return { connect_s: connectS, ...result }
  },

  /** Many rooms, every client updates its awareness (cursor) and observes the others'. */
  async awareness () {
    const clients = []
    const perRoom = cfg.clients_per_room
    for (let r = 0; r < cfg.rooms; r++) {
      for (let k = 0; k < perRoom; k++) clients.push(new Client(`aware-${r}`, { writerId: clients.length, track: true, aware: true }))
    }
    const t0 = now()
    await openAll(clients, cfg.connect_batch, cfg.connect_timeout_s * 1000)
    const connectS = (now() - t0) / 1000
    const result = await measureWriters(clients, () => perRoom - 1, clients)
    return { connect_s: connectS, ...result }
  },

  /** (C) idle connections: the parent compares the server's memory before and after. */
  async idle () {
    const warm = new Client('idle-warmup')
    await warm.open(cfg.connect_timeout_s * 1000)
    warm.close()
    await sleep(300)
    await checkpoint('idle-before')
    const clients = Array.from({ length: cfg.connections }, (_, i) => new Client(`idle-${i % cfg.rooms}`))
    const t0 = now()
    await openAll(clients, cfg.connect_batch, cfg.connect_timeout_s * 1000)
    const connectS = (now() - t0) / 1000
    await checkpoint('idle-connected', { connections: clients.length })
    const open = clients.filter(c => c.closeCode === null).length
    for (const c of clients) c.close()
    return { connect_s: connectS, connects_per_s: clients.length / connectS, connections: clients.length, still_open: open }
  },

  /** (D) a writer builds a large document, then many clients join it at once. */
  async join () {
    const room = 'join'
    const builder = new Client(room, { writerId: 0 })
    await builder.open(cfg.connect_timeout_s * 1000)
    const tBuild = now()
    const docBytes = await buildDocument(builder)
    const buildS = (now() - tBuild) / 1000
    await sleep(500)
    await checkpoint('join-start', { doc_bytes: docBytes })
    const joiners = Array.from({ length: cfg.joiners }, () => new Client(room))
    const cpu0 = process.cpuUsage()
    const t0 = now()
    const outcomes = await Promise.allSettled(joiners.map(c => c.open(cfg.join_timeout_s * 1000)))
    const allSyncedS = (now() - t0) / 1000
    // keep listening a little: a server that sends the document twice does it around now
    await sleep(cfg.settle_s * 1000)
    const cpu = process.cpuUsage(cpu0)
    await checkpoint('join-end')
    const synced = joiners.filter(c => c.syncedAt !== null)
    const failures = outcomes.filter(o => o.status === 'rejected').map(o => String(o.reason.message || o.reason))
    const bytes = joiners.map(c => c.syncBytes)
    const result = {
      doc_bytes: docBytes,
      doc_updates: cfg.doc_updates,
      build_s: buildS,
      joiners: joiners.length,
      synced: synced.length,
      failures: failures.slice(0, 5),
      all_synced_s: allSyncedS,
      time_to_synced_s: percentiles(synced.map(c => (c.syncedAt - t0) / 1000)),
      bytes_per_client: percentiles(bytes),
      doc_copies_per_client: percentiles(bytes.map(b => b / docBytes)),
      step2_per_client_max: Math.max(0, ...joiners.map(c => c.step2s)),
      client_cpu_s: (cpu.user + cpu.system) / 1e6
    }
    for (const c of joiners) c.close()
    builder.close()
    return result
  }
}

/**
 * Fill the builder's document until its v1 encoding is about `doc_bytes`, in `doc_updates`
 * updates. Each update is a transaction of pieces of 20-200 characters inserted at random places
 * (many items, as typing makes), ending with a marker; at most 4 updates are in flight (we wait
 * for their echo). The text per update adapts to the measured encoding overhead.
 */
const buildDocument = async (builder) => {
  const t = builder.doc.getText('t')
  const letters = 'abcdefghijklmnopqrstuvwxyz'.repeat(10)
  let seed = 42
  const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const inflight = []
  let encoded = 0
  let overhead = 1.3 // encoded bytes per character of text, re-measured after every update
  for (let u = 0; u < cfg.doc_updates; u++) {
    const chars = Math.max(0, (cfg.doc_bytes - encoded) / overhead / (cfg.doc_updates - u))
    const key = 0 * SEQ_LIMIT + builder.seq
    const echoed = new Promise(resolve => builder.echoes.set(key, resolve))
    builder.doc.transact(() => {
      for (let n = 0; n < chars;) {
        const len = 20 + Math.floor(random() * 180)
        const at = Math.floor(random() * (t.length + 1))
        const off = Math.floor(random() * 26)
        t.insert(at, letters.slice(off, off + len))
        n += len
      }
      t.insert(t.length, `#0:${builder.seq}#`)
    })
    builder.seq++
    encoded = Y.encodeStateAsUpdate(builder.doc).length
    overhead = encoded / Math.max(1, t.length)
    inflight.push(echoed)
    if (inflight.length >= 4) await withTimeout(inflight.shift(), cfg.join_timeout_s * 1000, 'echo of a document update')
  }
  for (const p of inflight) await withTimeout(p, cfg.join_timeout_s * 1000, 'echo of a document update')
  return encoded
}

const withTimeout = (promise, ms, what) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`no ${what} after ${ms} ms`)), ms)
  promise.then(v => { clearTimeout(timer); resolve(v) }, e => { clearTimeout(timer); reject(e) })
})

const main = async () => {
  const run = scenarios[cfg.scenario]
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`)
  const result = await run()
  emit({ event: 'result', result })
}

main().then(() => process.exit(0), (err) => {
  emit({ event: 'error', error: String(err && err.stack ? err.stack : err) })
  process.exit(2)
})
