// Reads what ysync assembled with the real yjs, for tests/interop/test_faithful_documents.py.
//
// One JSON command per line on stdin, one JSON answer per line on stdout
// ({"id", "ok", "result"|"error"}, as tests/harness.py's NodeDriver expects):
//   state    {roots, update, v2?, base?}: apply `base` (a v1 update, if given), then `update`
//            (v2 if `v2`, else v1) to a fresh Y.Doc -> docState of it (faithful_gen.mjs)
//   example  -> {roots, update, expected}: the case, one client writing
//            map.set('k', { i: 0, side: 'A', list: [0, 0] }) (update v1, expected: docState)
import * as Y from 'yjs'
import * as readline from 'node:readline'
import { b64, docState, unb64 } from './faithful_gen.mjs'

const ops = {
  state ({ roots, update, v2 = false, base = null }) {
    const doc = new Y.Doc()
    if (base !== null) Y.applyUpdate(doc, unb64(base))
    if (v2) Y.applyUpdateV2(doc, unb64(update))
    else Y.applyUpdate(doc, unb64(update))
    return docState(doc, roots)
  },
  example () {
    const roots = { map: 'map' }
    const doc = new Y.Doc()
    doc.clientID = 4242
    doc.getMap('map').set('k', { i: 0, side: 'A', list: [0, 0] })
    return { roots, update: b64(Y.encodeStateAsUpdate(doc)), expected: docState(doc, roots) }
  }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', line => {
  const { id, op, ...args } = JSON.parse(line)
  let answer
  try {
    if (!(op in ops)) throw new Error('unknown op ' + op)
    answer = { id, ok: true, result: ops[op](args) }
  } catch (err) {
    answer = { id, ok: false, error: String(err && err.stack ? err.stack : err) }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
})
