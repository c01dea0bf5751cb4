// Builds a large Yjs document and times Yjs's own update converters on it (scripts/bench_codec.py).
//
//   node updates_bench.mjs --mb 5 --out /tmp/dir [--seed 1] [--repeat 3]
//
// Three clients type words, delete, format and fill a map and an array until
// the v1 state update reaches the given size; then writes <out>/doc.v1 and <out>/doc.v2 and
// Yjs's conversions of them (yjs.v1_to_v2, yjs.v2_to_v1, yjs.merged), and
// prints one JSON line: sizes and the best of --repeat timings (seconds) of
// Y.convertUpdateFormatV1ToV2, Y.convertUpdateFormatV2ToV1, Y.mergeUpdatesV2 (of <out>/part0.v2,
// the document at half its size, and <out>/part1.v2, the rest), Y.encodeStateVectorFromUpdateV2 and
// Y.diffUpdateV2 (of the document against <out>/sv_half, the state vector of part0.v2; yjs.diff).
import * as Y from 'yjs'
import * as prng from 'lib0/prng'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name)
  return i >= 0 ? args[i + 1] : dflt
}
const targetBytes = Number(opt('mb', '5')) * 1024 * 1024
const out = opt('out', '.')
const gen = prng.create(Number(opt('seed', '1')))
const repeat = Number(opt('repeat', '3'))

const docs = [1, 2, 3].map(id => { const d = new Y.Doc(); d.clientID = 1000 + id * 7919; return d })
const sync = () => {
  for (const a of docs) for (const b of docs) if (a !== b) Y.applyUpdateV2(b, Y.encodeStateAsUpdateV2(a, Y.encodeStateVector(b)))
}
// Clients take turns editing at a cursor that mostly moves a little and sometimes jumps, as
// people do (random places all the time would make yjs itself slow to build the document).
const cursors = docs.map(() => 0)
let size = 0
let early = null // the document when it had half its size: the first of two updates to merge
while (size < targetBytes) {
  for (let i = 0; i < 20000; i++) {
    const c = Math.floor(i / 500) % docs.length
    const doc = docs[c]
    const text = doc.getText('text')
    const len = text.length
    if (prng.int31(gen, 0, 200) === 0) cursors[c] = prng.int31(gen, 0, len)
    const pos = Math.min(len, Math.max(0, cursors[c] + prng.int31(gen, -20, 20)))
    const r = prng.int31(gen, 0, 19)
    if (r < 12) {
      const word = prng.word(gen, 1, 9) + (prng.int31(gen, 0, 30) === 0 ? ' é😀 ' : ' ')
      text.insert(pos, word)
      cursors[c] = pos + word.length
    } else if (r < 14 && len > 10) {
      text.delete(Math.min(pos, len - 5), prng.int31(gen, 1, 4))
    } else if (r < 16) {
      // formatting goes to a smaller second text: once a Y.Text has formatting, yjs stops using
      // its search markers and every edit walks the text from its start
      const rich = doc.getText('rich')
      const at = prng.int31(gen, 0, rich.length)
      if (r === 14 || rich.length < 10) rich.insert(at, prng.word(gen, 1, 9) + ' ', { italic: true })
      else rich.format(Math.min(at, rich.length - 5), 4, { bold: prng.bool(gen) ? true : null })
    } else if (r === 16) {
      doc.getMap('map').set(prng.word(gen, 1, 3), { n: prng.int31(gen, 0, 1000), s: prng.word(gen) })
    } else if (r === 17) {
      doc.getArray('arr').push([prng.int31(gen, 0, 1e6), prng.word(gen)])
    } else {
      // a burst of typing: characters inserted one by one (Yjs merges them into one item)
      let p = pos
      for (let k = prng.int31(gen, 5, 40); k > 0; k--) text.insert(p++, prng.letter(gen))
      cursors[c] = p
    }
  }
  sync() // (a sync drops Yjs's search markers, which makes the next edits slow)
  size = Y.encodeStateAsUpdate(docs[0]).length
  if (early === null && size * 2 >= targetBytes) early = Y.encodeStateAsUpdateV2(docs[0])
}
sync()
const v1 = Y.encodeStateAsUpdate(docs[0])
const v2 = Y.encodeStateAsUpdateV2(docs[0])
writeFileSync(join(out, 'doc.v1'), v1)
writeFileSync(join(out, 'doc.v2'), v2)
writeFileSync(join(out, 'yjs.v1_to_v2'), Y.convertUpdateFormatV1ToV2(v1))
writeFileSync(join(out, 'yjs.v2_to_v1'), Y.convertUpdateFormatV2ToV1(v2))
const best = f => {
  let t = Infinity
  for (let i = 0; i < repeat; i++) {
    const s = process.hrtime.bigint()
    f()
    t = Math.min(t, Number(process.hrtime.bigint() - s) / 1e9)
  }
  return t
}
const result = {
  v1_bytes: v1.length,
  v2_bytes: v2.length,
  v1_to_v2_s: best(() => Y.convertUpdateFormatV1ToV2(v1)),
  v2_to_v1_s: best(() => Y.convertUpdateFormatV2ToV1(v2)),
  sv_s: best(() => Y.encodeStateVectorFromUpdateV2(v2))
}
const mergeInput = [early, Y.encodeStateAsUpdateV2(docs[0], Y.encodeStateVectorFromUpdateV2(early))]
mergeInput.forEach((u, i) => writeFileSync(join(out, `part${i}.v2`), u))
writeFileSync(join(out, 'yjs.merged'), Y.mergeUpdatesV2(mergeInput))
result.merge_s = best(() => Y.mergeUpdatesV2(mergeInput))
const svHalf = Y.encodeStateVectorFromUpdateV2(early)
writeFileSync(join(out, 'sv_half'), svHalf)
writeFileSync(join(out, 'yjs.diff'), Y.diffUpdateV2(v2, svHalf))
result.diff_s = best(() => Y.diffUpdateV2(v2, svHalf))
process.stdout.write(JSON.stringify(result) + '\n')
