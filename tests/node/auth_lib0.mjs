// lib0 crypto/jwt + crypto/ecdsa, driven by tests/interop/test_auth_lib0.py.
// Usage: node auth_lib0.mjs <command>, a JSON request on stdin, a JSON answer on stdout.
//   import   {jwk}                  -> {type, usages, algorithm}      (ecdsa.importKeyJwk)
//   mint     {privateJwk, payload}  -> {token}                        (jwt.encodeJwt)
//   verify   {publicJwk, token}     -> {ok, header, payload} | {ok: false, error}  (jwt.verifyJwt)
//   permurl  {callback, cases: [[room, userid], ...]} -> {urls}  (the URL y-redis src/server.js asks)
// Keys are imported exactly as y-redis does: ecdsa.importKeyJwk(json.parse(<env value>)).
import * as ecdsa from 'lib0/crypto/ecdsa'
import * as jwt from 'lib0/crypto/jwt'
import * as json from 'lib0/json'

const readStdin = async () => {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

const commands = {
  async import ({ jwk }) {
    const key = await ecdsa.importKeyJwk(json.parse(jwk))
    return { type: key.type, usages: key.usages, algorithm: key.algorithm }
  },
  async mint ({ privateJwk, payload }) {
    const key = await ecdsa.importKeyJwk(json.parse(privateJwk))
    return { token: await jwt.encodeJwt(key, payload) }
  },
  async verify ({ publicJwk, token }) {
    const key = await ecdsa.importKeyJwk(json.parse(publicJwk))
    try {
      const { header, payload } = await jwt.verifyJwt(key, token)
      return { ok: true, header, payload }
    } catch (err) {
      return { ok: false, error: String(err && err.message) }
    }
  },
  async permurl ({ callback, cases }) {
    // as y-redis 0.1.6 src/server.js
    callback += callback.slice(-1) !== '/' ? '/' : ''
    return { urls: cases.map(([room, userid]) => new URL(`${room}/${userid}`, callback).href) }
  }
}

const command = commands[process.argv[2]]
if (command == null) {
  console.error(`unknown command ${process.argv[2]}; one of ${Object.keys(commands).join(', ')}`)
  process.exit(2)
}
process.stdout.write(JSON.stringify(await command(await readStdin())) + '\n')
