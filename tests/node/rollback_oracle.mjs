// The real yjs for the document API tests (tests/interop/test_rollback_yjs.py): random
// documents with an earlier version of each, and what yjs makes of ysync's rollback updates.
//
// One JSON command per line on stdin, one JSON answer per line on stdout
// ({"id", "ok", "result"|"error"}, as tests/harness.py's NodeDriver expects):
//   gen   {seed, ops, at}   let the clients of updates_docs.mjs's scenario(seed) edit; after
//                           step `at`, client 0's document is the version -> {version (v2
//                           update), versionJson (docJson), current (v1 update of the final
//                           document), and of a fresh Y.Doc that applied `current`: currentJson
//                           (docJson) and toJSON ({root: JSON.stringify(root.toJSON()), or null
//                           where JSON.stringify throws})}
//   apply {updates}         a fresh Y.Doc applying each v1 update in turn -> {json (docJson),
//                           pending (whether structs or deletes are left pending)}
import * as Y from 'yjs'
import * as readline from 'node:readline'
import { scenario, docJson, b64, unb64 } from './updates_docs.mjs'

const rootJSON = (doc) => {
  const roots = {
    text: doc.getText('text'), map: doc.getMap('map'), arr: doc.getArray('arr'), xml: doc.getXmlFragment('xml')
  }
  const out = {}
  for (const [name, type] of Object.entries(roots)) {
    try { out[name] = JSON.stringify(type.toJSON()) } catch (e) { out[name] = null }
  }
  return out
}

const ops = {
  gen ({ seed, ops = 60, at = 30 }) {
    let version = null
    let versionJson = null
    const { docs } = scenario(seed, {
      ops,
      afterOp: (i, docs) => {
        if (i === at) {
          version = Y.encodeStateAsUpdateV2(docs[0])
          versionJson = docJson(docs[0])
        }
      }
    })
    const current = Y.encodeStateAsUpdate(docs[0])
    const loaded = new Y.Doc()
    Y.applyUpdate(loaded, current)
    return {
      version: b64(version),
      versionJson,
      current: b64(current),
      currentJson: docJson(loaded),
      toJSON: rootJSON(loaded)
    }
  },
  apply ({ updates }) {
    const doc = new Y.Doc()
    for (const u of updates) Y.applyUpdate(doc, unb64(u))
    return {
      json: docJson(doc),
      pending: doc.store.pendingStructs !== null || doc.store.pendingDs !== null
    }
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
