// eventray script runtime: evaluated once per QuickJS context, before any template stage.
// Every name it defines starts with "__" (or is $mv / console), so user scripts do not collide
// with it, and error locations skip its frames (see __lineOf).
var console = (function () {
  var sink = function () {};
  return { log: sink, info: sink, warn: sink, error: sink, debug: sink };
})();

// Base64 (standard or URL-safe, padding optional) via a char-code table: ~10x faster in
// QuickJS than indexOf per character.
var __B64 = (function () {
  var table = new Int16Array(128).fill(-1);
  var alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (var i = 0; i < 64; i++) table[alphabet.charCodeAt(i)] = i;
  table[45] = 62; table[95] = 63;  // "-" and "_"
  return table;
})();
function __base64ToBytes(text) {
  var out = [], buffer = 0, bits = 0, s = String(text);
  for (var i = 0; i < s.length; i++) {
    var code = s.charCodeAt(i);
    if (code === 61) break;  // "=" padding ends the data
    var v = code < 128 ? __B64[code] : -1;
    if (v < 0) {
      if (code === 32 || code === 10 || code === 13 || code === 9) continue;
      throw __plain("invalid base64 character " + JSON.stringify(s.charAt(i)));
    }
    buffer = ((buffer << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) { bits -= 8; out.push((buffer >> bits) & 0xff); }
  }
  return out;
}
function __hexToBytes(text) {
  var clean = String(text).replace(/\s/g, "");
  if (clean.length % 2 || /[^0-9a-fA-F]/.test(clean)) throw __plain("invalid hex payload");
  var out = [];
  for (var i = 0; i < clean.length; i += 2) out.push(parseInt(clean.substr(i, 2), 16));
  return out;
}
// An error raised by the runtime itself: its location is not a line of the user's script.
function __plain(message) { var e = new Error(message); e.__noLine = true; return e; }

// Builds a device codec's input from an ingested body. Accepted shapes: {bytes, fPort} (the
// codec CLI), The Things Stack webhooks (uplink_message.frm_payload), ChirpStack events
// (data as base64, fPort), or {payloadHex, fPort}.
function __codecInput(p) {
  if (p === null || typeof p !== "object") throw __plain("codec input must be an object, got " + typeof p);
  var bytes, fPort, recv, up = p.uplink_message;
  if (Array.isArray(p.bytes)) { bytes = p.bytes; fPort = p.fPort !== undefined ? p.fPort : p.port; recv = p.recvTime; }
  else if (up && typeof up === "object" && typeof up.frm_payload === "string") {
    bytes = __base64ToBytes(up.frm_payload); fPort = up.f_port; recv = p.received_at || up.received_at;
  } else if (typeof p.data === "string" && (p.fPort !== undefined || p.f_port !== undefined)) {
    bytes = __base64ToBytes(p.data); fPort = p.fPort !== undefined ? p.fPort : p.f_port; recv = p.time;
  } else if (typeof p.payloadHex === "string") { bytes = __hexToBytes(p.payloadHex); fPort = p.fPort; recv = p.recvTime; }
  else throw __plain("no uplink bytes in payload: expected bytes, uplink_message.frm_payload, data (base64) with fPort, or payloadHex");
  for (var i = 0; i < bytes.length; i++) {
    var b = bytes[i];
    if (typeof b !== "number" || b < 0 || b > 255 || b !== Math.floor(b)) throw __plain("bytes[" + i + "] is not a byte: " + JSON.stringify(b));
  }
  // recvTime stays text until a codec reads input.recvTime (few do): parsing and printing a
  // Date per uplink costs more than the rest of a small codec.
  var when = typeof recv === "string" && recv ? recv : (recv ? new Date(recv) : new Date()).toISOString();
  return { bytes: bytes, fPort: fPort === undefined ? 0 : fPort, when: when,
           variables: (p.variables && typeof p.variables === "object") ? p.variables : {} };
}

// ---------------------------------------------------------------- $mv: the validate helper
var $mv = (function () {
  var EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
  function Schema(type, inner) { this.__t = type; this.__inner = inner; this.__req = false; this.__rules = []; }
  Schema.prototype.required = function () { this.__req = true; return this; };
  Schema.prototype.optional = function () { this.__req = false; return this; };
  Schema.prototype.min = function (n) { this.__rules.push(["min", n]); return this; };
  Schema.prototype.max = function (n) { this.__rules.push(["max", n]); return this; };
  Schema.prototype.integer = function () { this.__rules.push(["integer"]); return this; };
  Schema.prototype.email = function () { this.__rules.push(["email"]); return this; };
  Schema.prototype.pattern = function (re) { this.__rules.push(["pattern", re instanceof RegExp ? re : new RegExp(re)]); return this; };
  Schema.prototype.validate = function (value) {
    var errors = [];
    __mvCheck(this, value, "", errors);
    if (!errors.length) return { error: null, value: value };
    return { error: { message: errors.map(function (e) { return e.message; }).join("; "), details: errors }, value: value };
  };
  function sizeOf(type, v) {
    if (type === "string" || type === "array") return v.length;
    if (type === "date") return __mvTime(v);
    return v;
  }
  function describe(type, kind, n) {
    var what = { string: "length", array: "length", date: "date" }[type];
    var cmp = kind === "min" ? "greater than or equal to " : "less than or equal to ";
    return (what ? what + " must be " : "must be ") + cmp + JSON.stringify(n);
  }
  function __mvCheck(s, v, path, errors) {
    var label = '"' + (path || "value") + '"';
    if (v === undefined || v === null) {
      if (s.__req) errors.push({ path: path, message: label + " is required" });
      return;
    }
    var t = s.__t, ok;
    if (t === "string") ok = typeof v === "string";
    else if (t === "number") ok = typeof v === "number" && isFinite(v);
    else if (t === "boolean") ok = typeof v === "boolean";
    else if (t === "array") ok = Array.isArray(v);
    else if (t === "object") ok = typeof v === "object" && !Array.isArray(v);
    else if (t === "date") ok = !isNaN(__mvTime(v));
    else ok = true;
    if (!ok) { errors.push({ path: path, message: label + " must be a" + (/^[aeiou]/.test(t) ? "n " : " ") + t }); return; }
    for (var i = 0; i < s.__rules.length; i++) {
      var r = s.__rules[i], kind = r[0];
      if (kind === "min" || kind === "max") {
        var size = sizeOf(t, v), bound = t === "date" ? __mvTime(r[1]) : r[1];
        if (kind === "min" ? size < bound : size > bound) errors.push({ path: path, message: label + " " + describe(t, kind, r[1]) });
      } else if (kind === "integer" && (typeof v !== "number" || Math.floor(v) !== v)) errors.push({ path: path, message: label + " must be an integer" });
      else if (kind === "email" && !EMAIL.test(String(v))) errors.push({ path: path, message: label + " must be a valid email" });
      else if (kind === "pattern" && !r[1].test(String(v))) errors.push({ path: path, message: label + " must match " + String(r[1]) });
    }
    if (t === "object" && s.__inner) {
      for (var key in s.__inner) __mvCheck(s.__inner[key], v[key], path ? path + "." + key : key, errors);
    } else if (t === "array" && s.__inner) {
      for (var j = 0; j < v.length; j++) __mvCheck(s.__inner, v[j], path + "[" + j + "]", errors);
    }
  }
  function __mvTime(v) {
    if (v instanceof Date) return v.getTime();
    if (typeof v === "number") return v;
    if (typeof v === "string" && v) return Date.parse(v);
    return NaN;
  }
  function make(type) { return function (inner) { return new Schema(type, inner); }; }
  return { object: make("object"), string: make("string"), number: make("number"), boolean: make("boolean"),
           date: make("date"), array: make("array"), any: make("any") };
})();

// ---------------------------------------------------------------- stages and the batch loop
var __stages = [];
var __checkStandardEvent = false;
var __seg = [];
var __cur = -1;
var __curStage = "";
var __memoryLimitMessage = "memory limit exceeded";

function __stageScript(name, fn) { __stages.push({ name: name, run: fn }); }
// The Things Stack's decodeUplink input: {bytes, fPort, recvTime: Date}, the Date made on first read.
function __uplinkInput(input) {
  var cached;
  return { bytes: input.bytes, fPort: input.fPort,
           get recvTime() { return cached || (cached = new Date(input.when)); } };
}
function __stageCodec(name, style, strict, factory) {
  __stages.push({ name: name, run: function (payload) {
    var input = __codecInput(payload), fns = factory(), out;
    if (typeof fns[style] !== "function") throw __plain("codec does not define " + style);
    if (style === "decodeUplink") out = fns.decodeUplink(__uplinkInput(input));
    else if (style === "Decoder") out = { data: fns.Decoder(input.bytes, input.fPort) };
    else out = { data: fns.Decode(input.fPort, input.bytes, input.variables) };
    if (!strict) return out;
    if (out === null || typeof out !== "object") throw __plain(style + " returned " + (out === null ? "null" : typeof out) + ", expected an object");
    if (Array.isArray(out.errors) && out.errors.length) throw __plain("codec reported errors: " + out.errors.join("; "));
    if (out.data === undefined) throw __plain(style + " returned no data");
    return { data: out.data, warnings: out.warnings || [], fPort: input.fPort, recvTime: input.when, uplink: payload };
  } });
}

// Fresh globals per event. Top-level declarations of a script are already local (every stage
// is wrapped in a function), so a script can only create a global by assigning to an undeclared
// name (sloppy mode) or by writing globalThis.x. Both are a [[Set]] of a property globalThis does
// not own, which walks the prototype chain: a Proxy placed there sees every such write and raises
// __dirty. Before each event, if __dirty, the globals added since __seal() are deleted. The
// per-event cost is one flag test; enumerating the global object each time cost ~6 us/event.
var __dirty = false;
var __baseline = null;
function __seal() {
  __baseline = {};
  var names = Object.getOwnPropertyNames(globalThis);
  for (var i = 0; i < names.length; i++) __baseline[names[i]] = true;
  var parent = Object.getPrototypeOf(globalThis);
  Object.setPrototypeOf(globalThis, new Proxy(Object.create(parent), {
    set: function (target, key, value, receiver) {
      __dirty = true;
      Object.defineProperty(receiver, key, { value: value, writable: true, enumerable: true, configurable: true });
      return true;
    }
  }));
}
function __restoreGlobals() {
  if (!__dirty) return;
  __dirty = false;
  var names = Object.getOwnPropertyNames(globalThis);
  for (var i = 0; i < names.length; i++) {
    if (!__baseline[names[i]]) { try { delete globalThis[names[i]]; } catch (e) {} }
  }
}

function __lineOf(e) {
  if (!e || e.__noLine || typeof e.stack !== "string") return null;
  var frames = e.stack.split("\n");
  for (var i = 0; i < frames.length; i++) {
    var m = /at (\S+) \(<input>:(\d+)/.exec(frames[i]);
    if (m && m[1].indexOf("__") !== 0) return parseInt(m[2], 10);
  }
  return null;
}
function __err(stage, e) {
  var message, line = null;
  if (e instanceof Error) {
    message = e.__noLine ? e.message : (e.name + ": " + e.message);
    if (e.name === "InternalError" && e.message === "out of memory") message = __memoryLimitMessage;
    line = __lineOf(e);
  }
  // QuickJS throws null when it cannot even allocate the out-of-memory error.
  else if (e === null) message = __memoryLimitMessage + " (or the script threw null)";
  else { try { message = "uncaught " + JSON.stringify(e); } catch (x) { message = "uncaught " + String(e); } }
  var out = { stage: stage, message: message };
  if (line !== null) out.line = line;
  return out;
}
function __standardEventProblem(ev) {
  if (ev === null || typeof ev !== "object" || Array.isArray(ev)) return "result must be a Standard Event object, got " + (ev === null ? "null" : Array.isArray(ev) ? "an array" : typeof ev);
  if (typeof ev.eventType !== "string" || !ev.eventType) return "Standard Event: eventType must be a non-empty string";
  if (typeof ev.eventId !== "string" || !ev.eventId) return "Standard Event: eventId must be a non-empty string";
  if (ev.data === null || typeof ev.data !== "object" || Array.isArray(ev.data)) return "Standard Event: data must be an object";
  if (ev.metadata !== undefined && ev.metadata !== null && (typeof ev.metadata !== "object" || Array.isArray(ev.metadata))) return "Standard Event: metadata must be an object";
  if (typeof ev.created !== "string" || isNaN(Date.parse(ev.created))) return "Standard Event: created must be an ISO-8601 string";
  return null;
}
function __runOne(payload, trace) {
  var cur = payload, steps = trace ? {} : null;
  for (var i = 0; i < __stages.length; i++) {
    var st = __stages[i], out;
    __curStage = st.name;
    try { out = st.run(cur); }
    catch (e) { return steps ? { e: __err(st.name, e), s: steps } : { e: __err(st.name, e) }; }
    if (out === undefined) {
      var miss = { stage: st.name, message: "result is undefined: the script must set result" };
      return steps ? { e: miss, s: steps } : { e: miss };
    }
    if (steps) steps[st.name] = out;
    cur = out;
  }
  if (__checkStandardEvent) {
    var bad = __standardEventProblem(cur);
    if (bad) return steps ? { e: { stage: "transform", message: bad }, s: steps } : { e: { stage: "transform", message: bad } };
  }
  return steps ? { r: cur, s: steps } : { r: cur };
}
// One crossing: parse the batch once, run events from `start`, return this segment's outputs.
// If the host interrupts (time or memory limit), __seg and __cur say how far it got.
var __items = [];
function __load(json) { __items = JSON.parse(json); return __items.length; }
function __run(start, trace) {
  __seg = [];
  for (var i = start; i < __items.length; i++) {
    __cur = i;
    __restoreGlobals();
    __seg.push(__runOne(__items[i], trace));
  }
  __cur = -1;
  return JSON.stringify(__seg);
}
function __partial() { return JSON.stringify({ cur: __cur, stage: __curStage, seg: __seg }); }
