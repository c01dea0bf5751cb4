// Drives headless Chromium pages of the demo editor for the browser tests (pages.py).
// Reads one JSON command per line on stdin, answers one JSON line per command on stdout
// ({"id", "ok", "result"|"error"}). Every named page is its own Chromium with its own fresh
// profile folder, as two people on two machines would be. End of stdin closes them all.
import { chromium } from 'playwright-core'
import * as readline from 'node:readline'

const CHROMIUM = process.env.YSYNC_CHROMIUM || '/usr/bin/chromium'
// This machine has no network but loopback: without the background-networking flags Chromium
// keeps opening refused connections to Google's hosts.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'
]

const pages = new Map()
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const get = (name) => {
  const p = pages.get(name)
  if (!p) throw new Error(`no page ${name}`)
  return p
}

const ops = {
  // `profile` is a new empty folder: launchPersistentContext passes it as --user-data-dir.
  async open ({ name, url, profile, timeout = 30000 }) {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: FLAGS, timeout,
      viewport: { width: 900, height: 560 }
    })
    context.setDefaultTimeout(timeout)
    const page = context.pages()[0] ?? await context.newPage()
    const errors = []
    page.on('console', (msg) => {
      if (msg.type() === 'error') {
        const { url, lineNumber } = msg.location()
        errors.push(`console: ${msg.text()} (${url}:${lineNumber})`)
      }
    })
    page.on('pageerror', (err) => errors.push(`page error: ${err.message}`))
    pages.set(name, { context, page, errors })
    await page.goto(url)
    await page.waitForFunction(() => window.ysyncTest !== undefined)
    return true
  },
  // Real key presses in the textarea, at its caret.
  async type ({ name, text }) {
    await get(name).page.locator('#editor').pressSequentially(text, { delay: 5 })
    return true
  },
  async press ({ name, key }) {
    await get(name).page.locator('#editor').press(key)
    return true
  },
  // What the page shows and what its Y.Doc holds.
  async state ({ name }) {
    return get(name).page.evaluate(() => {
      const { provider, text } = window.ysyncTest
      const editor = document.getElementById('editor')
      return {
        text: text.toString(),
        value: editor.value,
        caret: editor.selectionStart,
        status: document.getElementById('status').dataset.status,
        synced: provider.synced,
        online: provider.awareness.getStates().size,
        onlineShown: document.getElementById('online').textContent
      }
    })
  },
  async screenshot ({ name, path }) {
    await get(name).page.screenshot({ path })
    return path
  },
  errors ({ name }) { return get(name).errors },
  async close ({ name }) {
    await get(name).context.close()
    pages.delete(name)
    return true
  }
}

const closeAll = async () => {
  await Promise.allSettled([...pages.values()].map(p => p.context.close()))
  pages.clear()
}

const rl = readline.createInterface({ input: process.stdin })
const pending = []
rl.on('line', (line) => {
  if (!line.trim()) return
  const msg = JSON.parse(line)
  const run = async () => {
    try {
      const op = ops[msg.op]
      if (!op) throw new Error(`unknown op ${msg.op}`)
      emit({ id: msg.id, ok: true, result: (await op(msg)) ?? null })
    } catch (err) {
      emit({ id: msg.id, ok: false, error: String(err && err.stack ? err.stack : err) })
    }
  }
  pending.push(run())
})
rl.on('close', async () => {
  await Promise.allSettled(pending)
  await closeAll()
  process.exit(0)
})
