// Reads {"updates": [hex v2 snapshot, ...], "roots": {"name": "map"|"text"|"array"|"xml"}} on
// stdin; merges the snapshots with real Yjs (Y.mergeUpdatesV2, as y-redis's storage does) and
// prints {"json": {root: value}, "stateVector": hex, "v1": hex} on stdout.
import * as Y from 'yjs'

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
const updates = input.updates.map(hex => new Uint8Array(Buffer.from(hex, 'hex')))
const merged = Y.mergeUpdatesV2(updates)
const doc = new Y.Doc()
Y.applyUpdateV2(doc, merged)
const json = {}
for (const [name, kind] of Object.entries(input.roots)) {
  if (kind === 'map') json[name] = doc.getMap(name).toJSON()
  else if (kind === 'text') json[name] = doc.getText(name).toString()
  else if (kind === 'array') json[name] = doc.getArray(name).toJSON()
  else if (kind === 'xml') json[name] = doc.getXmlFragment(name).toString()
  else throw new Error('unknown root kind ' + kind)
}
const hex = bytes => Buffer.from(bytes).toString('hex')
process.stdout.write(JSON.stringify({
  json,
  stateVector: hex(Y.encodeStateVector(doc)),
  stateVectorFromUpdate: hex(Y.encodeStateVectorFromUpdateV2(merged)),
  v1: hex(Y.encodeStateAsUpdate(doc))
}))
