// Answers questions about Yjs updates with the real yjs, for the codec tests (ysync/updates).
//
// Reads one JSON request per line on stdin and writes one JSON answer per line on stdout.
// Requests ({"op": ..., "update": b64} or {"op": ..., "updates": [b64, ...]}):
//   json_v1 / json_v2    apply the update(s) in order to a fresh doc -> {"json": docJson}
//   v1_to_v2 / v2_to_v1  Y.convertUpdateFormat*            -> {"update": b64}
//   merge_v2             Y.mergeUpdatesV2(updates)         -> {"update": b64}
//   sv_v2                Y.encodeStateVectorFromUpdateV2   -> {"sv": b64}
//   diff_v2 / diff_v1    Y.diffUpdateV2 / Y.diffUpdate(update, sv) ({"sv": b64}) -> {"update": b64}
//   state_v2             apply the v2 update(s) in order to a fresh doc
//                        -> {"update": Y.encodeStateAsUpdateV2(doc), "sv": Y.encodeStateVector(doc)}
// A request that makes Yjs throw answers {"error": message}.
import * as Y from 'yjs'
import { createInterface } from 'node:readline'
import { docJson, b64, unb64 } from './updates_docs.mjs'

const list = req => (req.updates || [req.update]).map(unb64)

const answer = req => {
  switch (req.op) {
    case 'json_v1': case 'json_v2': {
      const doc = new Y.Doc()
      for (const u of list(req)) req.op === 'json_v1' ? Y.applyUpdate(doc, u) : Y.applyUpdateV2(doc, u)
      return { json: docJson(doc) }
    }
    case 'v1_to_v2': return { update: b64(Y.convertUpdateFormatV1ToV2(unb64(req.update))) }
    case 'v2_to_v1': return { update: b64(Y.convertUpdateFormatV2ToV1(unb64(req.update))) }
    case 'merge_v2': return { update: b64(Y.mergeUpdatesV2(list(req))) }
    case 'sv_v2': return { sv: b64(Y.encodeStateVectorFromUpdateV2(unb64(req.update))) }
    case 'diff_v2': return { update: b64(Y.diffUpdateV2(unb64(req.update), unb64(req.sv))) }
    case 'diff_v1': return { update: b64(Y.diffUpdate(unb64(req.update), unb64(req.sv))) }
    case 'state_v2': {
      const doc = new Y.Doc()
      for (const u of list(req)) Y.applyUpdateV2(doc, u)
      return { update: b64(Y.encodeStateAsUpdateV2(doc)), sv: b64(Y.encodeStateVector(doc)) }
    }
    default: throw new Error('unknown op ' + req.op)
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of rl) {
  if (!line.trim()) continue
  let out
  try {
    out = answer(JSON.parse(line))
  } catch (err) {
    out = { error: String(err && err.message) }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}
