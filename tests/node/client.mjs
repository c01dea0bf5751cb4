// A test driver for real y-websocket clients. Reads one JSON command per line on stdin, answers
// one JSON line per command on stdout ({"id", "ok", "result"|"error"}); unsolicited events are
// lines with "event". One process hosts many named clients, each with its own Y.Doc.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import * as readline from 'node:readline'

const clients = new Map()
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const get = (name) => {
  const c = clients.get(name)
  if (!c) throw new Error(`no client ${name}`)
  return c
}

const snapshot = (doc) => ({
  text: doc.getText('text').toString(),
  map: doc.getMap('map').toJSON(),
  arr: doc.getArray('arr').toJSON()
})

// {"$bytes": [..]} in a JSON command stands for a Uint8Array (revive); dumps write Uint8Arrays
// back in that form (plain), so binary values compare as byte lists
const revive = (v) => {
  if (Array.isArray(v)) return v.map(revive)
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '$bytes') return Uint8Array.from(v.$bytes)
    return Object.fromEntries(keys.map(k => [k, revive(v[k])]))
  }
  return v
}
const plain = (v) => {
  if (v instanceof Uint8Array) return { $bytes: Array.from(v) }
  if (Array.isArray(v)) return v.map(plain)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).map(k => [k, plain(v[k])]))
  return v
}
// a shared type as JSON, the keys of each Y.Map sorted: a Y.Map's key order is the order its
// entries reached this replica, not part of the document; values (JSON objects) stay as decoded
const typeJSON = (v) => {
  if (v instanceof Y.Map) return Object.fromEntries(Array.from(v.keys()).sort().map(k => [k, typeJSON(v.get(k))]))
  if (v instanceof Y.Array) return v.toArray().map(typeJSON)
  if (v instanceof Y.AbstractType) return v.toJSON()
  return plain(v)
}

const ops = {
  open ({ name, url, room, params = {}, protocols = [], clientID, awareness, resync }) {
    const doc = new Y.Doc()
    if (clientID != null) doc.clientID = clientID
    const provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: WebSocket, params, protocols, disableBc: true, resyncInterval: resync ?? -1
    })
    if (awareness !== undefined) provider.awareness.setLocalState(awareness)
    const c = { doc, provider, closes: [], statuses: [], syncedOnce: false }
    provider.on('status', (e) => { c.statuses.push(e.status); emit({ event: 'status', name, status: e.status }) })
    provider.on('connection-close', (e) => {
      const code = e ? e.code : null
      c.closes.push(code)
      emit({ event: 'close', name, code })
    })
    provider.on('sync', (s) => { if (s) c.syncedOnce = true })
    clients.set(name, c)
    return { clientID: doc.clientID }
  },
  async waitSynced ({ name, timeout = 10000 }) {
    const c = get(name)
    const start = Date.now()
    while (!c.provider.synced) {
      if (Date.now() - start > timeout) throw new Error(`${name} not synced after ${timeout} ms`)
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    return true
  },
  insertText ({ name, index = null, text }) {
    const t = get(name).doc.getText('text')
    t.insert(index ?? t.length, text)
  },
  formatText ({ name, index, length, attrs }) { get(name).doc.getText('text').format(index, length, attrs) },
  deleteText ({ name, index, length }) { get(name).doc.getText('text').delete(index, length) },
  mapSet ({ name, key, value }) { get(name).doc.getMap('map').set(key, value) },
  mapDelete ({ name, key }) { get(name).doc.getMap('map').delete(key) },
  arrayPush ({ name, values }) { get(name).doc.getArray('arr').push(values) },
  arrayInsert ({ name, index, values }) { get(name).doc.getArray('arr').insert(index, values) },
  arrayDelete ({ name, index, length }) { get(name).doc.getArray('arr').delete(index, length) },
  bigText ({ name, size, chunk = 1000 }) {
    // many small inserts, like typing, so the document has many items
    const doc = get(name).doc
    const t = doc.getText('text')
    const piece = 'abcdefghij'.repeat(Math.ceil(chunk / 10)).slice(0, chunk)
    doc.transact(() => {
      for (let n = 0; n < size; n += chunk) t.insert(t.length, piece)
    })
    return t.length
  },
  // `count` items written `interval` ms apart, as fast typing would: item `${tag}${i}` is set in
  // the map (value i), pushed to the array and appended to the text as `[${tag}${i}]`, one
  // transaction each; answers when the last one is written
  async burst ({ name, tag, count, interval = 10 }) {
    const doc = get(name).doc
    for (let i = 0; i < count; i++) {
      const item = `${tag}${i}`
      doc.transact(() => {
        doc.getMap('map').set(item, i)
        doc.getArray('arr').push([item])
        const t = doc.getText('text')
        t.insert(t.length, `[${item}]`)
      })
      if (interval > 0) await new Promise(resolve => setTimeout(resolve, interval))
    }
    return count
  },
  // content whose encoding matters: key order of JSON objects, formats, embeds, binary values
  mapSetRich ({ name, key, value }) { get(name).doc.getMap('map').set(key, revive(value)) },
  mapSetSubmap ({ name, key, entries }) {
    const doc = get(name).doc
    doc.transact(() => {
      const sub = new Y.Map()
      doc.getMap('map').set(key, sub)
      for (const [k, v] of Object.entries(entries)) sub.set(k, revive(v))
    })
  },
  arrayPushRich ({ name, values }) { get(name).doc.getArray('arr').push(revive(values)) },
  insertFormatted ({ name, index = null, text, attrs }) {
    const t = get(name).doc.getText('text')
    t.insert(index ?? t.length, text, revive(attrs))
  },
  insertEmbed ({ name, index = null, embed, attrs }) {
    const t = get(name).doc.getText('text')
    t.insertEmbed(index ?? t.length, revive(embed), attrs == null ? {} : revive(attrs))
  },
  // the shared types as JSON.stringify prints them here (the key order of JSON objects included,
  // Y.Map keys sorted; bytes as $bytes)
  dump ({ name }) {
    const doc = get(name).doc
    return {
      map: JSON.stringify(typeJSON(doc.getMap('map'))),
      arr: JSON.stringify(typeJSON(doc.getArray('arr'))),
      text: JSON.stringify(plain(doc.getText('text').toDelta()))
    }
  },
  get ({ name }) { return snapshot(get(name).doc) },
  textLength ({ name }) { return get(name).doc.getText('text').length },
  stateV1 ({ name }) { return Buffer.from(Y.encodeStateAsUpdate(get(name).doc)).toString('base64') },
  awarenessSet ({ name, state }) { get(name).provider.awareness.setLocalState(state) },
  awarenessStates ({ name }) {
    const out = {}
    get(name).provider.awareness.getStates().forEach((state, id) => { out[id] = state })
    return out
  },
  info ({ name }) {
    const c = get(name)
    return {
      synced: c.provider.synced,
      connected: c.provider.wsconnected,
      shouldConnect: c.provider.shouldConnect,
      closes: c.closes,
      statuses: c.statuses,
      syncedOnce: c.syncedOnce
    }
  },
  close ({ name }) {
    const c = get(name)
    c.provider.destroy()
    c.doc.destroy()
    clients.delete(name)
  },
  disconnect ({ name }) { get(name).provider.disconnect() },
  connect ({ name }) { get(name).provider.connect() }
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch (e) { emit({ id: null, ok: false, error: 'bad json' }); return }
  try {
    const fn = ops[cmd.op]
    if (!fn) throw new Error(`unknown op ${cmd.op}`)
    const result = await fn(cmd)
    emit({ id: cmd.id, ok: true, result: result ?? null })
  } catch (e) {
    emit({ id: cmd.id, ok: false, error: String(e && e.stack ? e.stack : e) })
  }
})
rl.on('close', () => {
  for (const c of clients.values()) c.provider.destroy()
  process.exit(0)
})
