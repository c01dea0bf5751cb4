// Documents with heavy deletes for the garbage-collection tests of the update codec.
//
//   node updates_gc.mjs gen --from 1 --count 10   > cases.jsonl
//   node updates_gc.mjs read < snapshots.jsonl    > views.jsonl
//
// gen: one JSON line per seed: the v1 updates the clients emitted (base64, in order), the
// document as y-redis's worker would persist it (a fresh gc'd Y.Doc that applied them all, then
// Y.encodeStateAsUpdateV2) with its size, and the writers' document as docJson + state vector.
// read: for each line {"v2": base64}, a fresh Y.Doc applies it; prints docJson, state vector.
import * as Y from 'yjs'
import * as prng from 'lib0/prng'
import * as readline from 'node:readline'
import { scenario, docJson, b64, unb64 } from './updates_docs.mjs'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 ? Number(args[i + 1]) : dflt
}

/** Three clients typing char by char, deleting most of it, nesting and deleting types. */
const heavyDeletes = (seed) => {
  const gen = prng.create(seed)
  const docs = []
  const updates = []
  for (let i = 0; i < 3; i++) {
    const doc = new Y.Doc()
    doc.clientID = 1000 + 7 * seed + i
    doc.on('update', u => updates.push(u))
    docs.push(doc)
  }
  const sync = () => {
    for (const a of docs) for (const b of docs) if (a !== b) Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
  }
  for (let round = 0; round < 6; round++) {
    for (const doc of docs) {
      const text = doc.getText('text')
      for (let k = 0; k < 40; k++) {
        const at = prng.int31(gen, 0, text.length)
        text.insert(at, prng.oneOf(gen, ['a', 'b', 'ü', '😀', ' ', 'xyz']),
          prng.bool(gen) ? { bold: true, color: prng.oneOf(gen, ['red', 'blue']) } : undefined)
      }
      if (text.length > 10) {
        const at = prng.int31(gen, 0, text.length - 5)
        text.delete(at, prng.int31(gen, 1, Math.min(text.length - at, 60)))
      }
      const map = doc.getMap('map')
      for (let k = 0; k < 8; k++) map.set(`k${prng.int31(gen, 0, 3)}`, { n: k, z: 'z', a: [k, -0, 1.5] })
      const nested = new Y.Map()
      map.set(`nested${round % 2}`, nested)
      const inner = new Y.Text()
      nested.set('t', inner)
      inner.insert(0, 'inner text that will be deleted with its parent')
      const arr = doc.getArray('arr')
      arr.push([new Y.Array(), 'x'.repeat(prng.int31(gen, 1, 30)), { b: 2, a: 1 }])
      if (arr.length > 4) arr.delete(0, prng.int31(gen, 1, arr.length - 1))
      const xml = doc.getXmlFragment('xml')
      const el = new Y.XmlElement('p')
      el.setAttribute('class', 'c' + round)
      el.insert(0, [new Y.XmlText('hello')])
      xml.insert(0, [el])
      if (xml.length > 2) xml.delete(1, 1)
    }
    if (prng.int31(gen, 0, 2) !== 0) sync()
  }
  sync()
  // most of the text goes
  const t = docs[0].getText('text')
  t.delete(2, Math.max(0, t.length - 6))
  sync()
  return { docs, updatesV1: updates }
}

const asYredis = (updates) => {
  const doc = new Y.Doc()
  doc.transact(() => { for (const u of updates) Y.applyUpdate(doc, u) })
  return Y.encodeStateAsUpdateV2(doc)
}

const view = doc => ({ json: docJson(doc), sv: b64(Y.encodeStateVector(doc)) })

if (args[0] === 'gen') {
  const from = opt('from', 1)
  const count = opt('count', 1)
  for (let seed = from; seed < from + count; seed++) {
    const { docs, updatesV1 } = seed % 2 === 0
      ? heavyDeletes(seed)
      : scenario(seed, { clients: 3, ops: 120 })
    const yredis = asYredis(updatesV1)
    process.stdout.write(JSON.stringify({
      seed,
      updates: updatesV1.map(b64),
      yredis_size: yredis.length,
      expected: view(docs[0])
    }) + '\n')
  }
} else if (args[0] === 'read') {
  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    if (!line.trim()) continue
    const doc = new Y.Doc()
    Y.applyUpdateV2(doc, unb64(JSON.parse(line).v2))
    process.stdout.write(JSON.stringify(view(doc)) + '\n')
  }
} else {
  process.stderr.write('usage: updates_gc.mjs gen|read\n')
  process.exit(2)
}
