// Generates test vectors for the update codec (ysync/updates) with the real yjs.
//
//   node updates_gen.mjs --from 1 --count 10 [--ops 60] [--clients 3] [--sample 8] > cases.jsonl
//
// One JSON line per seed. Binary fields are base64. Fields: the final document's state as v1
// and v2 update (v1, v2), Yjs's own conversions of both (v1_to_v2, v2_to_v1), the state vector
// Yjs reads from the v2 update (sv), the document as JSON (json, see docJson), updates the
// clients emitted (updates_v1 with Yjs's conversions updates_v1_to_v2, and updates_v2) and Yjs's
// merge of updates_v2 (merged), and a merge of a subset of all updates (partial: it has gaps,
// hence Skip structs) with its conversion and state vector. With --sample N only N updates,
// picked at random, are listed (in random order); by default all of them, in order.
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
const sample = opt('sample', 0)

const pick = (gen, list) => {
  if (!sample || list.length <= sample) return list
  const picked = []
  const rest = list.slice()
  while (picked.length < sample) picked.push(rest.splice(prng.int31(gen, 0, rest.length - 1), 1)[0])
  return picked
}

for (let seed = from; seed < from + count; seed++) {
  const { docs, updatesV2, updatesV1, gen } = scenario(seed, { clients, ops })
  const doc = docs[0]
  const v1 = Y.encodeStateAsUpdate(doc)
  const v2 = Y.encodeStateAsUpdateV2(doc)
  const subset = updatesV2.filter(() => prng.int31(gen, 0, 2) !== 0).reverse()
  const someV2 = pick(gen, updatesV2)
  const someV1 = pick(gen, updatesV1)
  const partial = Y.mergeUpdatesV2(subset.length === 1 ? [subset[0], new Uint8Array([0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])] : subset)
  const line = {
    seed,
    v1: b64(v1),
    v2: b64(v2),
    v1_to_v2: b64(Y.convertUpdateFormatV1ToV2(v1)),
    v2_to_v1: b64(Y.convertUpdateFormatV2ToV1(v2)),
    sv: b64(Y.encodeStateVectorFromUpdateV2(v2)),
    json: docJson(doc),
    updates_v2: someV2.map(b64),
    updates_v1: someV1.map(b64),
    updates_v1_to_v2: someV1.map(u => b64(Y.convertUpdateFormatV1ToV2(u))),
    merged: b64(Y.mergeUpdatesV2(someV2)),
    partial: b64(partial),
    partial_v1: b64(Y.convertUpdateFormatV2ToV1(partial)),
    partial_sv: b64(Y.encodeStateVectorFromUpdateV2(partial))
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
