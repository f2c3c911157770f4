// One node of the pi-mqtt cluster (scripts/cluster): an aedes MQTT 3.1.1
// broker on 127.0.0.1 that keeps sessions, queued messages, retained
// messages and wills in Redis and passes publications to the other nodes
// through Redis pub/sub, so a client may connect to any node and find its
// durable session there.
//
//   node node.mjs --id A --port 1884 --redis-port 6390
//
// Logs go to stderr; SIGINT/SIGTERM close the listener and the broker.
import { createServer } from 'node:net'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { Aedes } from 'aedes'

const require = createRequire(import.meta.url)
const persistenceRedis = require('aedes-persistence-redis')
const mqemitterRedis = require('mqemitter-redis')
const Redis = require('ioredis')

const { values: opt } = parseArgs({
  options: {
    id: { type: 'string' },
    port: { type: 'string' },
    'redis-port': { type: 'string', default: '6379' },
    // How often a node says it is alive. The others publish the wills of
    // the clients of a node silent for 3 of these (checked every 4): with
    // aedes' default of 60 s a device that died with its node would be
    // reported offline only 3 to 4 minutes later.
    'heartbeat-ms': { type: 'string', default: '5000' }
  }
})
const port = Number(opt.port)
const redisPort = Number(opt['redis-port'])
if (!opt.id || !(port > 0 && port < 65536) || !(redisPort > 0 && redisPort < 65536)) {
  console.error('usage: node node.mjs --id NAME --port PORT --redis-port PORT [--heartbeat-ms MS]')
  process.exit(2)
}
const log = (msg) => console.error(`node ${opt.id}: ${msg}`)
const redis = {
  host: '127.0.0.1',
  port: redisPort,
  // ioredis 5.8.2 to 5.x sends CLIENT SETINFO and its ready check (INFO)
  // after connecting, racing mqemitter-redis' SUBSCRIBE on the same
  // connection: about one node start in 80 died with "Connection in
  // subscriber mode, only subscriber commands may be used" (redis/ioredis#2037,
  // fixed in ioredis 6). Without the client info the race is gone.
  disableClientInfo: true
}

const persistence = persistenceRedis({
  ...redis,
  // Offline messages handed to a durable client when it connects (the
  // default, 1000, would cut a backlog as Mosquitto's default queue
  // limit does; pi-mqtt.conf allows a million).
  maxSessionDelivery: 1000000
})

// aedes keeps a client's will under the node it connected to and deletes
// only that node's copy when the client connects again. A client that
// moves to another node because its node died would leave its old will
// behind, and the surviving nodes would publish it (`offline`) minutes
// later, while the client is online. So a connect deletes the client's
// wills held under any other node too.
const wills = new Redis(redis)
const delWill = persistence.delWill.bind(persistence)
persistence.delWill = async (client) => {
  const result = await delWill(client)
  const suffix = ':' + encodeURIComponent(client.id)
  for (const key of await wills.lrange('will', 0, -1)) {
    if (key.endsWith(suffix) && key !== `will:${client.brokerId}${suffix}`) {
      await wills.lrem('will', 0, key)
      await wills.del(key)
    }
  }
  return result
}

const broker = await Aedes.createBroker({
  id: opt.id,
  mq: mqemitterRedis(redis),
  persistence,
  heartbeatInterval: Number(opt['heartbeat-ms']),
  // MQTT 3.1.1 allows client ids of 65535 bytes; aedes' default of 23 is
  // MQTT 3.1's (a fleet's `tank-sensor-1000` style ids fit, users' may not).
  maxClientsIdLength: 65535
})
broker.on('clientError', (client, err) => log(`client ${client.id}: ${err.message}`))
broker.on('connectionError', (client, err) => log(`connection: ${err.message}`))

// Wills left under this node's own id come from an earlier run of it that
// ended without its clients disconnecting (killed, crashed, power lost):
// none of those clients is connected to this process. The other nodes
// publish such wills only once they take the node for dead (three missed
// heartbeats); a node restarted sooner (by a service manager) would leave
// them unpublished for good, and a device that died with it `online`. So
// the node publishes them itself, before it accepts a connection, as the
// others would: publish, then delete. (A client that meanwhile connected
// to another node has had this will deleted there: see delWill above.)
const ownPrefix = `will:${opt.id}:`
let leftWills = 0
for (const key of await wills.lrange('will', 0, -1)) {
  if (!key.startsWith(ownPrefix)) continue
  const id = decodeURIComponent(key.slice(ownPrefix.length))
  const will = await persistence.getWill({ id })
  if (will) {
    // As this run's own message (see the patch's aedes.js).
    const packet = { ...will, brokerId: undefined, brokerCounter: undefined }
    await new Promise((resolve, reject) => broker.publish(packet, (err) => (err ? reject(err) : resolve())))
    leftWills++
  }
  await delWill({ id, brokerId: opt.id })
}
if (leftWills) log(`published ${leftWills} will(s) left by this node's previous run`)

// TCP_NODELAY, as pi-mqtt.conf's set_tcp_nodelay for Mosquitto: without it
// a QoS 2 step or a command often waits for a delayed TCP ACK (the fleet
// benchmark's decision latency was 59 ms at the median instead of ~1 ms).
const server = createServer({ noDelay: true }, broker.handle)
server.on('error', (err) => {
  log(`cannot listen on 127.0.0.1:${port}: ${err.message}`)
  process.exit(1)
})
server.listen(port, '127.0.0.1', () => log(`MQTT on 127.0.0.1:${port}, Redis on 127.0.0.1:${redisPort}`))

let stopping = false
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (stopping) process.exit(1)
    stopping = true
    server.close()
    broker.close(() => process.exit(0))
    setTimeout(() => process.exit(0), 3000).unref()
  })
}
