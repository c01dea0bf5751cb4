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
