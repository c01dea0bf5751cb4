// Random documents for tests/interop/test_faithful_documents.py, deterministic per seed.
//
//   node faithful_gen.mjs --seed S --count N [--ops K]   one JSON document per line on stdout
//
// 3-4 clients (separate Y.Docs that sync now and then, so many edits are concurrent) edit maps
// of JSON objects (1-20 keys in random insertion order, integer-like keys, nested objects and
// arrays, every kind of number, astral strings, Uint8Array), a Y.Text with several formatting
// attributes per run and embeds, an XML fragment, nested shared types and subdocuments, with
// heavy deletes and many overwrites. Each line holds:
//   roots     {name: kind} of the root types
//   updates   [{client, update}]: every v1 update a client produced, in the order produced
//             (a causal order: the order a server could receive them)
//   final     docState of the finished document (see docState)
//   earlier   {client, base, sv, state, after, alternatives}: one client's document part-way through (base:
//             its whole state as a v1 update, sv: its state vector, state: docState of base),
//             and `after`: docState of base + what yjs sends that client to catch up
//   alternatives {root: [json]}: JSON.stringify(root.toJSON()) as other yjs assemblies of the
//             final document give it (a fresh doc applying Y.mergeUpdates of the updates, or
//             y-redis's way: that doc's whole state applied to a fresh doc), where it differs
//             from `final` in the order of Y.Map entries only (also in `earlier`)
//   variants  names of the ways to assemble the final document (the writer's own doc,
//             merged, yredis, the updates applied in turn) whose docState differs from `final`
//             (informational: Y.Map entry order depends on the order of integration)
//
// docState is also what faithful_check.mjs prints for the updates ysync assembled.
import * as Y from 'yjs'
import * as prng from 'lib0/prng'
import { pathToFileURL } from 'node:url'

export const b64 = u => Buffer.from(u).toString('base64')
export const unb64 = s => new Uint8Array(Buffer.from(s, 'base64'))

export const ROOTS = { map: 'map', objects: 'map', arr: 'array', text: 'text', xml: 'xmlfragment' }

export const getRoot = (doc, name, kind) => {
  switch (kind) {
    case 'map': return doc.getMap(name)
    case 'array': return doc.getArray(name)
    case 'text': return doc.getText(name)
    case 'xmlfragment': return doc.getXmlFragment(name)
    default: throw new Error('unknown root kind ' + kind)
  }
}

// --- the state of a document, as strings Python compares ------------------------------------

// JSON.stringify cannot show -0 or tell a Uint8Array from an object with integer keys
const strict = (_key, v) => {
  if (typeof v === 'number' && Object.is(v, -0)) return '$-0'
  if (v instanceof Uint8Array) return { $bin: Array.from(v) }
  return v
}

// the document as one JSON value where Y.Map entries are sorted by key (their order depends
// on the order the entries were integrated) and every plain value is left as it is
const canon = v => {
  if (v instanceof Y.Doc) return ['$doc', v.guid]
  if (v instanceof Y.XmlElement || v instanceof Y.XmlFragment || v instanceof Y.XmlText) return ['$xml', v.toString()]
  if (v instanceof Y.Text) return ['$text', v.toString()]
  if (v instanceof Y.Map) return ['$map', Array.from(v.entries()).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([k, x]) => [k, canon(x)])]
  if (v instanceof Y.Array) return ['$array', v.toArray().map(canon)]
  return v
}

const walk = (v, path, out) => {
  if (v instanceof Y.Doc) {
    out.subdocs[path] = JSON.stringify({ guid: v.guid, meta: v.meta ?? null, autoLoad: v.autoLoad }, strict)
  } else if (v instanceof Y.Text) { // Y.XmlText too
    out.texts[path] = JSON.stringify(v.toDelta())
    out.strict[path + '#delta'] = JSON.stringify(v.toDelta(), strict)
  } else if (v instanceof Y.XmlElement) {
    const attrs = Object.entries(v.getAttributes()).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    out.xml[path] = JSON.stringify([v.nodeName, attrs])
    v.toArray().forEach((c, i) => walk(c, `${path}/${i}`, out))
  } else if (v instanceof Y.XmlFragment) {
    v.toArray().forEach((c, i) => walk(c, `${path}/${i}`, out))
  } else if (v instanceof Y.Map) {
    for (const k of Array.from(v.keys()).sort()) walk(v.get(k), `${path}.${JSON.stringify(k)}`, out)
  } else if (v instanceof Y.Array) {
    v.toArray().forEach((c, i) => walk(c, `${path}[${i}]`, out))
  }
}

/**
 * The state of `doc` as strings: `json` JSON.stringify(root.toJSON()) per root (an XML fragment:
 * toString()), `texts` JSON.stringify(toDelta()) of every text and XML text (nested ones too,
 * by path), `xml` every XML element's name and attributes, `subdocs` every subdocument's guid
 * and options, `canon` the roots with Y.Map entries sorted by key (to tell entry order apart
 * from the key order of values), `strict` canon and deltas showing -0 and binary, `sv` the
 * state vector.
 */
export const docState = (doc, roots) => {
  const out = { json: {}, texts: {}, xml: {}, subdocs: {}, canon: {}, strict: {}, sv: b64(Y.encodeStateVector(doc)) }
  for (const [name, kind] of Object.entries(roots)) {
    const t = getRoot(doc, name, kind)
    out.json[name] = kind === 'xmlfragment' ? t.toString() : JSON.stringify(t.toJSON())
    out.canon[name] = JSON.stringify(canon(t))
    out.strict[name] = JSON.stringify(canon(t), strict)
    walk(t, name, out)
  }
  return out
}

// --- random content -----------------------------------------------------------------------

const ASTRAL = ['😀', '𝄞', '🎉', '👍🏽', '𠀋', '🇩🇪', '🧑‍💻']
const BMP = ['é', 'ü', '中文', 'Ω', '€', '"', '\\', '\n', '<', '&']
const KEYS = ['0', '7', '10', '123', '2', '1', '99', 'i', 'side', 'list', 'a', 'b', 'zeta', 'alpha',
  'é', '😀', 'x y', '-1', '01', '1.5', '4294967294', '4294967295', '', 'Z', 'id']
const NUMBERS = [0, 1, -1, 42, -42, 127, 128, -129, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 32,
  2 ** 53 - 1, -(2 ** 53 - 1), 1e21, -1e21, 1e300, 0.5, -0.25, 3.14159, 1e-7, -0, 0.1 + 0.2,
  123456789.123, 1.5, -1.5]

const randText = (gen, max = 10) => {
  let s = ''
  for (let i = prng.int31(gen, 1, max); i > 0; i--) {
    const r = prng.int31(gen, 0, 9)
    if (r < 6) s += prng.word(gen, 1, 7) + ' '
    else if (r < 8) s += prng.oneOf(gen, ASTRAL)
    else s += prng.oneOf(gen, BMP)
  }
  return s
}

const randNumber = gen => prng.int31(gen, 0, 3) === 0
  ? (prng.bool(gen) ? prng.int31(gen, -1000000, 1000000) : (prng.real53(gen) - 0.5) * 1e6)
  : prng.oneOf(gen, NUMBERS)

const randKeys = (gen, n) => {
  const pool = KEYS.slice()
  const keys = []
  while (keys.length < n) {
    const k = pool.length > 0 && prng.int31(gen, 0, 3) > 0
      ? pool.splice(prng.int31(gen, 0, pool.length - 1), 1)[0]
      : prng.word(gen, 1, 6)
    if (!keys.includes(k) && k !== '__proto__') keys.push(k)
  }
  return keys
}

const randObject = (gen, depth = 0, size = null) => {
  const obj = {}
  for (const k of randKeys(gen, size ?? prng.int31(gen, 1, depth > 0 ? 6 : 20))) obj[k] = randValue(gen, depth + 1)
  return obj
}

const randValue = (gen, depth = 0) => {
  const r = prng.int31(gen, 0, depth > 2 ? 6 : 9)
  switch (r) {
    case 0: case 1: return randNumber(gen)
    case 2: return randText(gen, 3)
    case 3: return prng.bool(gen)
    case 4: return null
    case 5: return prng.uint8Array(gen, prng.int31(gen, 0, 6))
    case 6: return prng.int31(gen, -100, 100)
    case 7: {
      const arr = []
      for (let i = prng.int31(gen, 0, 5); i > 0; i--) arr.push(randValue(gen, depth + 1))
      return arr
    }
    default: return randObject(gen, depth)
  }
}

// a value JSON can carry (formatting attributes, embeds, XML attributes): no binary
const randJson = (gen, depth = 0) => {
  const r = prng.int31(gen, 0, depth > 1 ? 3 : 5)
  if (r === 0) { const n = randNumber(gen); return Object.is(n, -0) ? 0 : n }
  if (r === 1) return randText(gen, 2)
  if (r === 2) return prng.bool(gen)
  if (r === 3) return prng.int31(gen, 0, 9)
  if (r === 4) return [randJson(gen, depth + 1), randJson(gen, depth + 1)]
  const obj = {}
  for (const k of randKeys(gen, prng.int31(gen, 2, 6))) obj[k] = randJson(gen, depth + 1)
  return obj
}

const randAttrs = (gen, allowNull = true) => {
  const attrs = {}
  const names = ['bold', 'italic', 'color', 'link', 'font', 'size', 'comment', '0', '12']
  for (let i = prng.int31(gen, 1, 4); i > 0; i--) {
    const key = prng.oneOf(gen, names)
    const r = prng.int31(gen, 0, 5)
    attrs[key] = r === 0 && allowNull ? null : r === 1 ? true : r < 4 ? randJson(gen) : randObject(gen, 2, prng.int31(gen, 2, 8))
  }
  return attrs
}

let subdocs = 0

const randNested = (gen, seed) => {
  const r = prng.int31(gen, 0, 6)
  if (r === 0) {
    const m = new Y.Map()
    for (const k of randKeys(gen, prng.int31(gen, 1, 6))) m.set(k, randValue(gen, 1))
    return m
  }
  if (r === 1) { // Y.Map in Y.Array
    const a = new Y.Array()
    const m = new Y.Map()
    m.set('obj', randObject(gen, 1))
    a.insert(0, [randValue(gen, 1), m, randObject(gen, 1)])
    return a
  }
  if (r === 2) {
    const t = new Y.Text()
    t.insert(0, randText(gen), randAttrs(gen, false))
    t.insert(0, randText(gen, 4))
    return t
  }
  if (r === 3) {
    const opts = { guid: `sub-${seed}-${subdocs++}` }
    if (prng.bool(gen)) opts.meta = randObject(gen, 1, prng.int31(gen, 1, 6))
    if (prng.bool(gen)) opts.autoLoad = true
    return new Y.Doc(opts)
  }
  if (r === 4) {
    const e = new Y.XmlElement('section')
    e.setAttribute('id', prng.word(gen))
    e.setAttribute('data', randObject(gen, 2, prng.int31(gen, 2, 6)))
    e.insert(0, [new Y.XmlText(randText(gen, 3))])
    return e
  }
  if (r === 5) { // a map holding a map holding a text
    const outer = new Y.Map()
    const inner = new Y.Map()
    const t = new Y.Text()
    t.insert(0, randText(gen, 4), { bold: true, color: randJson(gen) })
    inner.set('t', t)
    inner.set('v', randObject(gen, 1))
    outer.set('inner', inner)
    return outer
  }
  return randObject(gen)
}

const clamp = (n, len) => Math.max(0, Math.min(n, len))

// the text's UTF-16 units as yjs counts them: an embed is one (toString() skips embeds and
// an XML text's toString() is markup)
const units = text => text.toDelta().map(op => typeof op.insert === 'string' ? op.insert : ' ').join('')

// never split a surrogate pair (yjs would put U+FFFD on both sides, and write them so)
const whole = (text, pos) => {
  if (pos <= 0 || pos >= text.length) return clamp(pos, text.length)
  const unit = units(text).charCodeAt(pos)
  return unit >= 0xdc00 && unit <= 0xdfff ? pos - 1 : pos
}

const editText = (gen, text) => {
  const len = text.length
  const pos = whole(text, prng.int31(gen, 0, len))
  const end = n => whole(text, clamp(pos + n, len))
  const r = prng.int31(gen, 0, 11)
  if (r < 3) text.insert(pos, randText(gen), prng.bool(gen) ? undefined : randAttrs(gen, false))
  else if (r === 3) text.insertEmbed(pos, randObject(gen, 2, prng.int31(gen, 1, 8)), prng.bool(gen) ? undefined : randAttrs(gen, false))
  else if (r < 6 && len > 0) text.format(pos, end(prng.int31(gen, 1, 30)) - pos, randAttrs(gen))
  else if (r === 6 && len > 0) text.delete(pos, end(prng.int31(gen, 1, 8)) - pos)
  else if (r === 7) { // a long run typed in pieces
    for (let i = prng.int31(gen, 5, 20); i > 0; i--) text.insert(whole(text, clamp(pos + i, text.length)), randText(gen, 6))
  } else if (r === 8 && len > 20) { // delete most of it
    const start = whole(text, prng.int31(gen, 0, Math.floor(len / 10)))
    text.delete(start, whole(text, start + Math.floor(len * 0.8)) - start)
  } else text.insert(pos, prng.oneOf(gen, ASTRAL) + randText(gen, 2), { font: randObject(gen, 2, prng.int31(gen, 2, 5)) })
}

const editMap = (gen, map, seed) => {
  const key = prng.oneOf(gen, KEYS.slice(0, 16))
  const r = prng.int31(gen, 0, 11)
  if (r < 4) map.set(key, randObject(gen))
  else if (r === 4) map.set(key, randValue(gen))
  else if (r < 7) map.set(key, randNested(gen, seed))
  else if (r === 7) map.delete(key)
  else if (r === 8) { // overwrite one key many times
    for (let i = prng.int31(gen, 5, 25); i > 0; i--) map.set(key, prng.bool(gen) ? randObject(gen, 1) : randValue(gen))
  } else {
    const inner = map.get(key)
    if (inner instanceof Y.Text) editText(gen, inner)
    else if (inner instanceof Y.Map) {
      if (prng.int31(gen, 0, 3) === 0 && inner.size > 0) inner.delete(prng.oneOf(gen, Array.from(inner.keys())))
      else inner.set(prng.oneOf(gen, KEYS), randValue(gen, 1))
    } else if (inner instanceof Y.Array) {
      if (inner.length > 1 && prng.bool(gen)) inner.delete(0, 1)
      else inner.insert(prng.int31(gen, 0, inner.length), [randObject(gen, 1)])
    } else if (inner instanceof Y.XmlElement) inner.setAttribute(prng.oneOf(gen, ['id', 'class', 'data']), prng.bool(gen) ? prng.word(gen) : randObject(gen, 2, 3))
    else map.set(key, randObject(gen))
  }
}

const editArray = (gen, arr, seed) => {
  const len = arr.length
  const pos = prng.int31(gen, 0, len)
  const r = prng.int31(gen, 0, 8)
  if (r < 3) {
    const items = []
    for (let i = prng.int31(gen, 1, 5); i > 0; i--) items.push(randValue(gen))
    arr.insert(pos, items)
  } else if (r < 5) arr.insert(pos, [randNested(gen, seed)])
  else if (r === 5) arr.insert(pos, [prng.uint8Array(gen, prng.int31(gen, 0, 8))])
  else if (r < 8 && len > 0) { // deletes nested types too
    const start = prng.int31(gen, 0, len - 1)
    arr.delete(start, clamp(prng.int31(gen, 1, 6), len - start))
  } else {
    const item = len > 0 ? arr.get(prng.int31(gen, 0, len - 1)) : null
    if (item instanceof Y.Map) item.set(prng.oneOf(gen, KEYS), randObject(gen, 1))
    else if (item instanceof Y.Text) editText(gen, item)
    else arr.push([randObject(gen)])
  }
}

const editXml = (gen, frag) => {
  const len = frag.length
  const r = prng.int31(gen, 0, 7)
  if (r < 2) {
    const el = new Y.XmlElement(prng.oneOf(gen, ['p', 'h1', 'ul', 'custom-el']))
    for (const k of randKeys(gen, prng.int31(gen, 1, 5))) el.setAttribute(k === '' ? 'empty' : k, prng.int31(gen, 0, 3) === 0 ? randObject(gen, 2, 3) : prng.word(gen))
    const t = new Y.XmlText()
    t.insert(0, randText(gen, 4), prng.bool(gen) ? undefined : randAttrs(gen, false))
    el.insert(0, [t, new Y.XmlElement('em')])
    frag.insert(prng.int31(gen, 0, len), [el])
  } else if (r === 2) {
    frag.insert(prng.int31(gen, 0, len), [new Y.XmlText(randText(gen, 3))])
  } else if (r < 6 && len > 0) {
    const child = frag.get(prng.int31(gen, 0, len - 1))
    if (child instanceof Y.XmlElement) {
      const s = prng.int31(gen, 0, 3)
      if (s === 0) child.setAttribute(prng.oneOf(gen, ['class', 'id', 'data-x', '0', '10']), prng.word(gen))
      else if (s === 1) child.removeAttribute(prng.oneOf(gen, Object.keys(child.getAttributes()).concat(['id'])))
      else if (s === 2) child.insert(child.length, [new Y.XmlText(randText(gen, 2))])
      else if (child.length > 0) child.delete(0, 1)
    } else if (child instanceof Y.XmlText) {
      if (child.length > 0 && prng.bool(gen)) child.format(0, whole(child, clamp(3, child.length)), randAttrs(gen))
      else child.insert(0, randText(gen, 3))
    }
  } else if (len > 0) frag.delete(prng.int31(gen, 0, len - 1), 1)
}

// --- a scenario ---------------------------------------------------------------------------

const fromUpdates = (updates, merge) => {
  const doc = new Y.Doc()
  if (merge) Y.applyUpdate(doc, Y.mergeUpdates(updates))
  else for (const u of updates) Y.applyUpdate(doc, u)
  return doc
}

// the root JSON other yjs assemblies give where only the order of Y.Map entries differs
const alternatives = (state, others) => {
  const out = {}
  for (const other of others) {
    for (const [name, json] of Object.entries(other.json)) {
      if (json !== state.json[name] && other.canon[name] === state.canon[name]) (out[name] ??= []).push(json)
    }
  }
  return out
}

const sync = (a, b) => Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)), 'remote')

/** One random document edited by 3-4 clients; see the head of this file for its fields. */
export const generate = (seed, ops = 120) => {
  const gen = prng.create(seed)
  const clients = prng.int31(gen, 3, 4)
  const docs = []
  const updates = []
  for (let i = 0; i < clients; i++) {
    const doc = new Y.Doc()
    doc.clientID = prng.uint32(gen) % 2 ** 31 + i
    doc.on('update', (update, _origin, _doc, tr) => { if (tr.local) updates.push({ client: doc.clientID, update }) })
    docs.push(doc)
  }
  const earlierAt = prng.int31(gen, Math.floor(ops / 4), Math.floor((3 * ops) / 4))
  let earlier = null
  for (let i = 0; i < ops; i++) {
    const doc = prng.oneOf(gen, docs)
    const r = prng.int31(gen, 0, 11)
    if (r < 3) editMap(gen, doc.getMap(prng.bool(gen) ? 'map' : 'objects'), seed)
    else if (r < 5) editText(gen, doc.getText('text'))
    else if (r < 7) editArray(gen, doc.getArray('arr'), seed)
    else if (r < 9) editXml(gen, doc.getXmlFragment('xml'))
    else if (r === 9) { // several changes in one transaction
      doc.transact(() => {
        editMap(gen, doc.getMap('objects'), seed)
        editText(gen, doc.getText('text'))
        editArray(gen, doc.getArray('arr'), seed)
      })
    } else sync(prng.oneOf(gen, docs), prng.oneOf(gen, docs))
    if (i === earlierAt) {
      const k = prng.int31(gen, 0, clients - 1)
      earlier = { client: docs[k].clientID, base: Y.encodeStateAsUpdate(docs[k]), sv: Y.encodeStateVector(docs[k]) }
    }
  }
  for (const a of docs) for (const b of docs) if (a !== b) sync(a, b)
  const writer = docs[0]
  const final = docState(fromUpdates([Y.encodeStateAsUpdate(writer)], false), ROOTS)
  if (JSON.stringify(final).includes('\ufffd')) { // (yjs writes a lone surrogate as U+FFFD)
    throw new Error(`seed ${seed}: a surrogate pair was split`)
  }
  const same = s => JSON.stringify(s) === JSON.stringify(final)
  const list = updates.map(u => u.update)
  const merged = Y.mergeUpdates(list)
  const yredis = fromUpdates([merged], false) // y-redis: merged updates in a Y.Doc, sent whole
  const views = {
    writer: docState(writer, ROOTS),
    merged: docState(fromUpdates([merged], false), ROOTS),
    yredis: docState(fromUpdates([Y.encodeStateAsUpdate(yredis)], false), ROOTS),
    inTurn: docState(fromUpdates(list, false), ROOTS)
  }
  const variants = Object.entries(views).filter(([, s]) => !same(s)).map(([name]) => name)
  const baseDoc = fromUpdates([earlier.base], false)
  const state = docState(baseDoc, ROOTS)
  const catchUp = update => { const d = fromUpdates([earlier.base], false); Y.applyUpdate(d, update); return docState(d, ROOTS) }
  return {
    seed,
    roots: ROOTS,
    updates: updates.map(({ client, update }) => ({ client, update: b64(update) })),
    final,
    alternatives: alternatives(final, [views.merged, views.yredis]),
    earlier: {
      client: earlier.client,
      base: b64(earlier.base),
      sv: b64(earlier.sv),
      state,
      after: catchUp(Y.encodeStateAsUpdate(writer, earlier.sv)),
      alternatives: alternatives(catchUp(Y.encodeStateAsUpdate(writer, earlier.sv)), [
        catchUp(Y.diffUpdate(merged, earlier.sv)),
        catchUp(Y.encodeStateAsUpdate(yredis, earlier.sv))
      ])
    },
    variants
  }
}

const main = () => {
  const args = process.argv.slice(2)
  const opt = (name, dflt) => { const i = args.indexOf(name); return i < 0 ? dflt : Number(args[i + 1]) }
  const seed = opt('--seed', 1)
  const count = opt('--count', 1)
  const ops = opt('--ops', 120)
  for (let s = seed; s < seed + count; s++) process.stdout.write(JSON.stringify(generate(s, ops)) + '\n')
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) main()
