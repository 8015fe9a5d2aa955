// Preload for Portkey's gateway (node --import ./bind-loopback.mjs …/start-server.js --port=N).
// @portkey-ai/gateway 1.15.2 calls @hono/node-server serve({fetch, port}) with no hostname, so
// Node would listen on every interface (::). This makes a listen(port) without a host bind to
// PORTKEY_BIND_HOST (default 127.0.0.1) instead. Nothing else is changed.
import net from 'node:net';

const HOST = process.env.PORTKEY_BIND_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const a0 = args[0];
  if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    if (args.length < 2 || args[1] === undefined || args[1] === null) args[1] = HOST;
    else if (typeof args[1] === 'function') args.splice(1, 0, HOST);
  } else if (a0 && typeof a0 === 'object' && a0.port !== undefined && !a0.path && !a0.host) {
    args[0] = { ...a0, host: HOST };
  }
  return listen.apply(this, args);
};
