// Loaded with NODE_OPTIONS=--require <this file> into a real Node client (Next.js, the Prisma CLI and
// every child they spawn: the environment is inherited). Points the vendor's telemetry host at the
// telewarden proxy inside this process only, as a DNS override would on the client's machine:
//   TELEWARDEN_PRELOAD_HOSTS="telemetry.nextjs.org=127.0.0.1:8443,checkpoint.prisma.io=127.0.0.1:8444"
// - dns.lookup (and dns.promises.lookup) answer the vendor host with the proxy's address;
// - net.connect / tls.connect to the vendor host on port 443 go to the proxy's port instead (the
//   reverse proxy listens on a free loopback port, not 443). The TLS server name stays the vendor's,
//   so the client checks the proxy's certificate for the vendor's name (NODE_EXTRA_CA_CERTS).
// Nothing else changes: the machine's /etc/hosts is never touched.
'use strict';
const dns = require('dns');
const net = require('net');
const tls = require('tls');

const map = new Map();
for (const item of (process.env.TELEWARDEN_PRELOAD_HOSTS || '').split(',')) {
  const m = /^([^=]+)=([^:]+):(\d+)$/.exec(item.trim());
  if (m) map.set(m[1].toLowerCase(), { address: m[2], port: Number(m[3]) });
}
const target = (host) => (host ? map.get(String(host).toLowerCase().replace(/\.$/, '')) : undefined);

const lookup = dns.lookup;
dns.lookup = function (hostname, options, callback) {
  const t = target(hostname);
  if (!t) return lookup.apply(this, arguments);
  if (typeof options === 'function') { callback = options; options = {}; }
  if (typeof options === 'number') options = { family: options };
  const family = net.isIPv6(t.address) ? 6 : 4;
  process.nextTick(() => options && options.all
    ? callback(null, [{ address: t.address, family }])
    : callback(null, t.address, family));
};
const plookup = dns.promises.lookup;
dns.promises.lookup = async function (hostname, options) {
  const t = target(hostname);
  if (!t) return plookup.apply(this, arguments);
  const family = net.isIPv6(t.address) ? 6 : 4;
  return options && options.all ? [{ address: t.address, family }] : { address: t.address, family };
};

function redirect(original) {
  return function (...args) {
    let opts = args[0];
    if (opts !== null && typeof opts === 'object' && !Array.isArray(opts)) {
      const t = target(opts.host || opts.hostname || opts.servername);
      if (t && (Number(opts.port) === 443 || opts.port === undefined)) {
        args[0] = { ...opts, port: t.port, host: opts.host || opts.hostname || opts.servername,
                    servername: opts.servername || opts.host || opts.hostname };
      }
    } else if (typeof opts === 'number' || typeof opts === 'string') {
      const t = target(typeof args[1] === 'string' ? args[1] : undefined);
      if (t && Number(opts) === 443) args[0] = t.port;
    }
    return original.apply(this, args);
  };
}
tls.connect = redirect(tls.connect);
net.connect = redirect(net.connect);
net.createConnection = net.connect;
