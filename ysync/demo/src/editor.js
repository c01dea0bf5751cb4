// The demo page that `ysync serve` answers at GET / (server.demo): a <textarea> bound to the
// Y.Text 'text' of one room, kept in sync by y-websocket over the browser's own WebSocket, with
// the connection status and the number of people online (awareness states, yourself included).
// Query string: ?room=name (default demo) &name=who &server=ws://host:port (another server, such
// as a y-redis one). Without ?server= the WebSocket URL is the page's own location (ws: or wss:,
// same host and port, same folder), so the page also works behind a proxy.
// window.ysyncTest = { doc, provider, text } for tests and the console.
// scripts/build_demo bundles this file into ../static/editor.js.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const query = new URLSearchParams(location.search)
const room = query.get('room') || 'demo'
const name = query.get('name') || `guest-${Math.floor(Math.random() * 1000)}`
// the page's folder: '' at /, '/ysync' at /ysync/ (a proxy that strips the prefix); y-websocket
// appends '/' + room
const folder = location.pathname.replace(/\/[^/]*$/, '')
const own = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${folder}`
const server = (query.get('server') || own).replace(/\/+$/, '')

const doc = new Y.Doc()
const text = doc.getText('text')
// Without disableBc, tabs of one browser would also sync over a BroadcastChannel, around the
// server: the page shows what goes through ysync.
const provider = new WebsocketProvider(server, room, doc, { disableBc: true })
provider.awareness.setLocalStateField('user', { name })

const editor = document.getElementById('editor')
const statusView = document.getElementById('status')
const onlineView = document.getElementById('online')
document.getElementById('room').textContent = room
document.getElementById('server').textContent = `${server}/${room}`

// The transaction origin of edits made in this textarea, so that they are not written back.
const fromEditor = Symbol('textarea')

const isHighSurrogate = (s, i) => i >= 0 && i < s.length && s.charCodeAt(i) >= 0xd800 && s.charCodeAt(i) <= 0xdbff
const isLowSurrogate = (s, i) => i >= 0 && i < s.length && s.charCodeAt(i) >= 0xdc00 && s.charCodeAt(i) <= 0xdfff

/** The one splice { index, remove, insert } that turns `before` into `after`. */
function diff (before, after) {
  const common = Math.min(before.length, after.length)
  let start = 0
  while (start < common && before[start] === after[start]) start++
  // never split a surrogate pair: Yjs counts UTF-16 units like the textarea, but half an emoji
  // is not a character
  if (start > 0 && isHighSurrogate(before, start - 1)) start--
  let end = 0
  while (end < common - start && before[before.length - 1 - end] === after[after.length - 1 - end]) end++
  if (end > 0 && isLowSurrogate(before, before.length - end)) end--
  return { index: start, remove: before.length - start - end, insert: after.slice(start, after.length - end) }
}

/** Where a caret at `index` goes when the text changes by a Y.Text `delta`. */
function moveIndex (index, delta) {
  let pos = 0 // position in the new text
  for (const op of delta) {
    if (pos > index) break
    if (op.retain !== undefined) {
      pos += op.retain
    } else if (op.insert !== undefined) {
      const length = typeof op.insert === 'string' ? op.insert.length : 1
      if (pos < index) index += length
      pos += length
    } else if (op.delete !== undefined) {
      if (pos < index) index -= Math.min(op.delete, index - pos)
    }
  }
  return index
}

editor.addEventListener('input', () => {
  const { index, remove, insert } = diff(text.toString(), editor.value)
  doc.transact(() => {
    if (remove > 0) text.delete(index, remove)
    if (insert.length > 0) text.insert(index, insert)
  }, fromEditor)
})

text.observe((event, transaction) => {
  if (transaction.origin === fromEditor) return
  const { selectionStart, selectionEnd, selectionDirection } = editor
  const delta = event.delta
  editor.value = text.toString()
  editor.setSelectionRange(moveIndex(selectionStart, delta), moveIndex(selectionEnd, delta), selectionDirection)
})

provider.on('status', ({ status }) => {
  statusView.dataset.status = status
  statusView.textContent = status
})
provider.on('sync', (synced) => { statusView.dataset.synced = String(synced) })

const showOnline = () => { onlineView.textContent = String(provider.awareness.getStates().size) }
provider.awareness.on('change', showOnline)
showOnline()

window.ysyncTest = { doc, provider, text }
