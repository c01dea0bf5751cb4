// Prints {"updates": [hex v1 update, ...], "expected": {...}} on stdout: the updates two real Yjs
// clients (ids 1 and 2) send while editing one document (map, text, array, a deletion), in the
// order a server would receive them, and the document they end with.
import * as Y from 'yjs'

const updates = []
const a = new Y.Doc()
a.clientID = 1
const b = new Y.Doc()
b.clientID = 2
a.on('update', u => { updates.push(u); Y.applyUpdate(b, u, 'remote') })
b.on('update', (u, origin) => { if (origin !== 'remote') { updates.push(u); Y.applyUpdate(a, u, 'remote') } })

a.getMap('map').set('key', 'value')
b.getText('text').insert(0, 'hello')
a.getText('text').insert(5, ' world')
b.getArray('array').push([1, 'two', { three: 3 }])
a.getMap('map').set('nested', { list: [1, 2, 3], flag: true })
b.getText('text').delete(0, 1)
b.getText('text').insert(0, 'H')
a.getArray('array').delete(0, 1)
a.getMap('map').delete('key')

const hex = bytes => Buffer.from(bytes).toString('hex')
process.stdout.write(JSON.stringify({
  updates: updates.map(hex),
  expected: {
    map: a.getMap('map').toJSON(),
    text: a.getText('text').toString(),
    array: a.getArray('array').toJSON()
  }
}))
