// Documents and earlier states of them for the diff tests of the update codec (ysync/updates).
//
//   node updates_diff.mjs --from 1 --count 10 [--ops 60] [--clients 3] > cases.jsonl
//
// One JSON line per seed (scenarios of updates_docs.mjs), binary fields in base64: the final
// document (v1, v2, json), updates with gaps (partial: a merge of a subset of the emitted
// updates, hence Skip structs) and single emitted updates (some_v2), and `states`: earlier
// states of the document as {v2, sv} - each client's doc at a third and two thirds of the
// edits (before the final sync), and a fresh doc after the first quarter, half, three
// quarters of the emitted updates (in order).
import * as Y from 'yjs'
import * as prng from 'lib0/prng'
import { scenario, docJson, b64 } from './updates_docs.mjs'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const from = opt('from', 1)
const count = opt('count', 1)
const ops = opt('ops', 60)
const clients = opt('clients', 3)

const state = doc => ({ v2: b64(Y.encodeStateAsUpdateV2(doc)), sv: b64(Y.encodeStateVector(doc)) })

for (let seed = from; seed < from + count; seed++) {
  const states = []
  const snapshotAt = new Set([Math.floor(ops / 3), Math.floor((2 * ops) / 3)])
  const afterOp = (i, docs) => { if (snapshotAt.has(i)) for (const d of docs) states.push(state(d)) }
  const { docs, updatesV2, gen } = scenario(seed, { clients, ops, afterOp })
  const n = updatesV2.length
  for (const k of [n >> 2, n >> 1, (3 * n) >> 2]) {
    const doc = new Y.Doc()
    for (const u of updatesV2.slice(0, k)) Y.applyUpdateV2(doc, u)
    states.push(state(doc))
  }
  const subset = updatesV2.filter(() => prng.int31(gen, 0, 2) !== 0)
  const some = [0, 1, 2].map(() => updatesV2[prng.int31(gen, 0, n - 1)])
  const line = {
    seed,
    v1: b64(Y.encodeStateAsUpdate(docs[0])),
    v2: b64(Y.encodeStateAsUpdateV2(docs[0])),
    json: docJson(docs[0]),
    partial: b64(subset.length > 1 ? Y.mergeUpdatesV2(subset) : updatesV2[0]),
    some_v2: some.map(b64),
    states
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
