// eventray script runtime: evaluated once per QuickJS context, before any template stage.
//
// User scripts see two names from it: `console` and `$mv` (read-only). Everything else lives in
// the closure below, so a template can neither reach nor replace the runtime's functions, and
// those use intrinsics captured here at start-up: a template that overrides JSON.parse,
// JSON.stringify or Array.prototype.push changes its own results, never the batch's bookkeeping.
// Stage programs register through the temporary global `__eventray`; the host takes the batch
// entry points from it and `seal` deletes it before any event runs.
//
// Function names start with "__" so that error locations skip the runtime's frames (lineOf).
var console = (function () {
  var sink = function () {};
  return { log: sink, info: sink, warn: sink, error: sink, debug: sink };
})();

(function __runtime(global) {
  "use strict";
  // ---------------------------------------------------------------- captured intrinsics
  var uncurry = Function.prototype.bind.bind(Function.prototype.call);
  var callWith = uncurry(Function.prototype.call);
  var parseJSON = JSON.parse, toJSON = JSON.stringify;
  var ArrayProto = Array.prototype, nativePush = ArrayProto.push, join = uncurry(ArrayProto.join);
  var StringProto = String.prototype, nativeCharCodeAt = StringProto.charCodeAt;
  var charCodeAt = uncurry(nativeCharCodeAt);
  var indexOf = uncurry(String.prototype.indexOf);
  var strSlice = uncurry(String.prototype.slice);
  var hasOwn = uncurry(Object.prototype.hasOwnProperty);
  var ObjectProto = Object.prototype, create = Object.create, freeze = Object.freeze, defineProperty = Object.defineProperty;
  var getPrototypeOf = Object.getPrototypeOf, setPrototypeOf = Object.setPrototypeOf;
  var getOwnPropertyNames = Object.getOwnPropertyNames, isArray = Array.isArray;
  var floor = Math.floor, isFiniteNumber = isFinite, isNaNValue = isNaN, parseInteger = parseInt;
  var dateParse = Date.parse, dateGetTime = uncurry(Date.prototype.getTime);
  var dateToISOString = uncurry(Date.prototype.toISOString), toFixed = uncurry(Number.prototype.toFixed);
  var toStr = String, ErrorCtor = Error, TypeErrorCtor = TypeError, RegExpCtor = RegExp;
  var DateCtor = Date, ProxyCtor = Proxy, Int16ArrayCtor = Int16Array;
  var regexpExec = RegExp.prototype.exec, regexpTest = uncurry(RegExp.prototype.test);

  // A regular expression of the runtime's own: RegExp.prototype.test calls `this.exec`, which a
  // template could replace, so it gets the original as an own property.
  function __ownRegExp(re) {
    defineProperty(re, "exec", { value: regexpExec });
    return re;
  }
  // A property descriptor without a prototype, so inherited `get`/`set` keys added to
  // Object.prototype by a template cannot turn it into an accessor.
  function __descriptor(value, hidden) {
    var d = create(null);
    d.value = value; d.writable = true; d.enumerable = !hidden; d.configurable = true;
    return d;
  }
  // An error raised by the runtime itself: its location is not a line of the user's script.
  function __plain(message) { var e = new ErrorCtor(message); e.__noLine = true; return e; }

  // ---------------------------------------------------------------- codec input
  // Base64 (standard or URL-safe, padding optional) via a char-code table, four characters at
  // a time; anything unusual (padding, white space, a bad character) goes to the general loop.
  // The four-at-a-time loop calls charCodeAt and push as methods (a third cheaper than captured
  // copies), after checking that they are still the originals.
  var B64 = new Int16ArrayCtor(128).fill(-1);
  (function __fillB64() {
    var alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (var i = 0; i < 64; i++) B64[charCodeAt(alphabet, i)] = i;
    B64[45] = 62; B64[95] = 63;  // "-" and "_"
  })();
  function __base64ToBytes(s) {
    var n = s.length, out = [], o, i = 0;
    if (StringProto.charCodeAt === nativeCharCodeAt && ArrayProto.push === nativePush) {
      for (; i + 4 <= n; i += 4) {
        var c0 = s.charCodeAt(i), c1 = s.charCodeAt(i + 1), c2 = s.charCodeAt(i + 2), c3 = s.charCodeAt(i + 3);
        if ((c0 | c1 | c2 | c3) >= 128) break;
        var v0 = B64[c0], v1 = B64[c1], v2 = B64[c2], v3 = B64[c3];
        if ((v0 | v1 | v2 | v3) < 0) break;
        out.push((v0 << 2) | (v1 >> 4), ((v1 & 15) << 4) | (v2 >> 2), ((v2 & 3) << 6) | v3);
      }
    }
    o = out.length;
    var buffer = 0, bits = 0;
    for (; i < n; i++) {
      var code = charCodeAt(s, i);
      if (code === 61) break;  // "=" padding ends the data
      var v = code < 128 ? B64[code] : -1;
      if (v < 0) {
        if (code === 32 || code === 10 || code === 13 || code === 9) continue;
        throw __plain("invalid base64 character " + toJSON(strSlice(s, i, i + 1)));
      }
      buffer = ((buffer << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) { bits -= 8; out[o++] = (buffer >> bits) & 0xff; }
    }
    return out;
  }
  // White space as /\s/ has it.
  function __isSpace(c) {
    return (c >= 9 && c <= 13) || c === 32 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
      c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
  }
  function __hexToBytes(s) {
    var digits = [], d = 0;
    for (var i = 0; i < s.length; i++) {
      var c = charCodeAt(s, i);
      if (__isSpace(c)) continue;
      var v = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
      if (v < 0) throw __plain("invalid hex payload");
      digits[d++] = v;
    }
    if (d % 2) throw __plain("invalid hex payload");
    var out = [];
    for (var j = 0; j < d; j += 2) out[j >> 1] = (digits[j] << 4) | digits[j + 1];
    return out;
  }
  function __checkBytes(bytes) {
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes[i];
      if (typeof b !== "number" || b < 0 || b > 255 || b !== floor(b)) throw __plain("bytes[" + i + "] is not a byte: " + toJSON(b));
    }
    return bytes;
  }
  // Reads a device codec's input from an ingested body into inBytes, inPort and inWhen (no
  // object per uplink). Accepted shapes: {bytes, fPort} (the codec CLI), The Things Stack
  // webhooks (uplink_message.frm_payload), ChirpStack events (data as base64, fPort), or
  // {payloadHex, fPort}. Bytes decoded here are bytes by construction; only caller-supplied
  // arrays are checked.
  var inBytes = null, inPort = 0, inWhen = "";
  function __codecInput(p) {
    if (p === null || typeof p !== "object") throw __plain("codec input must be an object, got " + typeof p);
    var bytes, fPort, recv, up = p.uplink_message;
    if (isArray(p.bytes)) { bytes = __checkBytes(p.bytes); fPort = p.fPort !== undefined ? p.fPort : p.port; recv = p.recvTime; }
    else if (up && typeof up === "object" && typeof up.frm_payload === "string") {
      bytes = __base64ToBytes(up.frm_payload); fPort = up.f_port; recv = p.received_at || up.received_at;
    } else if (typeof p.data === "string" && (p.fPort !== undefined || p.f_port !== undefined)) {
      bytes = __base64ToBytes(p.data); fPort = p.fPort !== undefined ? p.fPort : p.f_port; recv = p.time;
    } else if (typeof p.payloadHex === "string") { bytes = __hexToBytes(p.payloadHex); fPort = p.fPort; recv = p.recvTime; }
    else throw __plain("no uplink bytes in payload: expected bytes, uplink_message.frm_payload, data (base64) with fPort, or payloadHex");
    inBytes = bytes;
    inPort = fPort === undefined ? 0 : fPort;
    // recvTime stays text until a codec reads input.recvTime (few do): parsing and printing a
    // Date per uplink costs more than the rest of a small codec.
    inWhen = typeof recv === "string" && recv ? recv : dateToISOString(recv ? new DateCtor(recv) : new DateCtor());
  }
  // The Things Stack's decodeUplink input: {bytes, fPort, recvTime: Date}, the Date made on first read.
  function __uplinkInput(bytes, fPort, when) {
    var cached;
    return { bytes: bytes, fPort: fPort, get recvTime() { return cached || (cached = new DateCtor(when)); } };
  }

  // ---------------------------------------------------------------- $mv: the validate helper
  // Schemas are plain mutable objects (each builder call changes and returns its schema). The
  // bundle hoists schema expressions built only from literals (see mv_hoist.py): such an
  // expression is evaluated once per context, its schema tree frozen with a precompiled check,
  // and each evaluation in an event gets a fresh object inheriting from it; the first builder
  // call on that object gives it its own copy of the fields, so it behaves like a new schema.
  var EMAIL = __ownRegExp(/^[^\s@]+@[^\s@]+\.[^\s@]+$/);
  var TYPE_MESSAGE = { string: "must be a string", number: "must be a number", boolean: "must be a boolean",
                       array: "must be an array", object: "must be an object", date: "must be a date" };
  function Schema(type, inner) { this.__t = type; this.__inner = inner; this.__req = false; this.__rules = []; }
  var SP = Schema.prototype;
  function __own(s) {
    if (!hasOwn(s, "__t")) {  // an object inheriting from a hoisted, frozen schema
      var base = getPrototypeOf(s), rules = base.__rules, copy = [];
      for (var i = 0; i < rules.length; i++) copy[i] = rules[i];
      defineProperty(s, "__t", __descriptor(base.__t));
      defineProperty(s, "__inner", __descriptor(base.__inner));
      defineProperty(s, "__req", __descriptor(base.__req));
      defineProperty(s, "__rules", __descriptor(copy));
      defineProperty(s, "__plan", __descriptor(null, true));
    }
    return s;
  }
  function __rule(s, rule) { var rules = __own(s).__rules; rules[rules.length] = rule; return s; }
  SP.required = function __required() { __own(this).__req = true; return this; };
  SP.optional = function __optional() { __own(this).__req = false; return this; };
  SP.min = function __min(n) { return __rule(this, ["min", n]); };
  SP.max = function __max(n) { return __rule(this, ["max", n]); };
  SP.integer = function __integer() { return __rule(this, ["integer"]); };
  SP.email = function __email() { return __rule(this, ["email"]); };
  SP.pattern = function __pattern(re) { return __rule(this, ["pattern", re instanceof RegExpCtor ? re : new RegExpCtor(re)]); };
  SP.validate = function __validate(value) {
    var plan = this.__plan;
    var errors = plan ? plan(value, "", null) : __mvNode(this.__t, this.__req, this.__rules, this.__inner, value, "", null);
    if (errors === null) return { error: null, value: value };
    var messages = [];
    for (var i = 0; i < errors.length; i++) messages[i] = errors[i].message;
    return { error: { message: join(messages, "; "), details: errors }, value: value };
  };
  function __mvFail(errors, path, text) {
    var out = errors === null ? [] : errors;
    out[out.length] = { path: path, message: '"' + (path || "value") + '" ' + text };
    return out;
  }
  function __mvTime(v) {
    if (v instanceof DateCtor) return dateGetTime(v);
    if (typeof v === "number") return v;
    if (typeof v === "string" && v) return dateParse(v);
    return NaN;
  }
  function __mvTypeOk(t, v) {
    switch (t) {
      case "string": return typeof v === "string";
      case "number": return typeof v === "number" && isFiniteNumber(v);
      case "boolean": return typeof v === "boolean";
      case "array": return isArray(v);
      case "object": return typeof v === "object" && !isArray(v);
      case "date": return !isNaNValue(__mvTime(v));
      default: return true;
    }
  }
  function __mvRules(t, rules, v, path, errors) {
    for (var i = 0; i < rules.length; i++) {
      var r = rules[i], kind = r[0];
      if (kind === "min" || kind === "max") {
        var size = t === "string" || t === "array" ? v.length : t === "date" ? __mvTime(v) : v;
        var bound = t === "date" ? __mvTime(r[1]) : r[1];
        if (kind === "min" ? size < bound : size > bound) {
          var what = t === "string" || t === "array" ? "length must be " : t === "date" ? "date must be " : "must be ";
          errors = __mvFail(errors, path, what + (kind === "min" ? "greater than or equal to " : "less than or equal to ") + toJSON(r[1]));
        }
      } else if (kind === "integer" && (typeof v !== "number" || floor(v) !== v)) errors = __mvFail(errors, path, "must be an integer");
      else if (kind === "email" && !regexpTest(EMAIL, toStr(v))) errors = __mvFail(errors, path, "must be a valid email");
      else if (kind === "pattern" && !r[1].test(toStr(v))) errors = __mvFail(errors, path, "must match " + toStr(r[1]));
    }
    return errors;
  }
  // One schema node against one value (a schema that is not frozen: read as it is now).
  function __mvNode(t, req, rules, inner, v, path, errors) {
    if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
    if (!__mvTypeOk(t, v)) return __mvFail(errors, path, TYPE_MESSAGE[t]);
    if (rules.length) errors = __mvRules(t, rules, v, path, errors);
    if (!inner) return errors;
    if (t === "object") {
      for (var key in inner) errors = __mvCheck(inner[key], v[key], path ? path + "." + key : key, errors);
    } else if (t === "array") {
      for (var j = 0; j < v.length; j++) errors = __mvCheck(inner, v[j], path + "[" + j + "]", errors);
    }
    return errors;
  }
  function __mvCheck(s, v, path, errors) {
    var plan = s.__plan;
    if (plan) return plan(v, path, errors);
    return __mvNode(s.__t, s.__req, s.__rules, s.__inner, v, path, errors);
  }
  // The check of a frozen node, specialised once: its type test inlined, its children's checks
  // bound, and min/max rules folded into one range that short-cuts the rule loop when the
  // value is inside it (the loop still writes every message when it is not).
  function __mvCompile(s) {
    var t = s.__t, req = s.__req, rules = s.__rules, inner = s.__inner, message = TYPE_MESSAGE[t];
    var lo = -Infinity, hi = Infinity, i;
    var ranged = t === "number" || t === "string" || t === "array" || t === "date";
    for (i = 0; ranged && i < rules.length; i++) {
      var kind = rules[i][0], bound = t === "date" ? __mvTime(rules[i][1]) : rules[i][1];
      if ((kind !== "min" && kind !== "max") || typeof bound !== "number") { ranged = false; break; }
      if (kind === "min") { if (bound > lo) lo = bound; } else if (bound < hi) hi = bound;
    }
    var checkRules = rules.length === 0 ? null : function __rules(v, size, path, errors) {
      return ranged && size >= lo && size <= hi ? errors : __mvRules(t, rules, v, path, errors);
    };
    if (t === "object") {
      var keys = [], plans = [];
      if (inner) for (var key in inner) { keys[keys.length] = key; plans[plans.length] = inner[key].__plan; }
      return function __planObject(v, path, errors) {
        if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
        if (typeof v !== "object" || isArray(v)) return __mvFail(errors, path, message);
        if (checkRules !== null) errors = checkRules(v, v, path, errors);
        for (var j = 0; j < keys.length; j++) { var k = keys[j]; errors = plans[j](v[k], path ? path + "." + k : k, errors); }
        return errors;
      };
    }
    if (t === "number") return function __planNumber(v, path, errors) {
      if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
      if (typeof v !== "number" || v - v !== 0) return __mvFail(errors, path, message);
      if (checkRules === null || (ranged && v >= lo && v <= hi)) return errors;
      return __mvRules(t, rules, v, path, errors);
    };
    if (t === "string") return function __planString(v, path, errors) {
      if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
      if (typeof v !== "string") return __mvFail(errors, path, message);
      return checkRules !== null ? checkRules(v, v.length, path, errors) : errors;
    };
    if (t === "boolean" && checkRules === null) return function __planBoolean(v, path, errors) {
      if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
      return typeof v === "boolean" ? errors : __mvFail(errors, path, message);
    };
    if (t === "date" && checkRules === null) return function __planDate(v, path, errors) {
      if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
      var time = typeof v === "string" ? (v ? dateParse(v) : NaN) : __mvTime(v);
      return time === time ? errors : __mvFail(errors, path, message);
    };
    var item = t === "array" && inner ? inner.__plan : null;
    return function __planOther(v, path, errors) {
      if (v === undefined || v === null) return req ? __mvFail(errors, path, "is required") : errors;
      if (!__mvTypeOk(t, v)) return __mvFail(errors, path, message);
      if (checkRules !== null) errors = checkRules(v, t === "array" ? v.length : t === "date" ? __mvTime(v) : v, path, errors);
      if (item !== null) for (var j = 0; j < v.length; j++) errors = item(v[j], path + "[" + j + "]", errors);
      return errors;
    };
  }
  // A hoisted schema tree can be shared if it holds nothing but schemas and plain specs.
  function __mvSealable(s) {
    if (!(s instanceof Schema) || !hasOwn(s, "__t") || !isArray(s.__rules)) return false;
    var t = s.__t, inner = s.__inner;
    if (inner && t === "object") {
      if (typeof inner !== "object" || getPrototypeOf(inner) !== ObjectProto) return false;
      for (var key in inner) if (!hasOwn(inner, key) || !__mvSealable(inner[key])) return false;
    } else if (inner && t === "array") return __mvSealable(inner);
    return true;
  }
  // Freezes a sealable tree, children first, each node with its compiled check.
  function __mvFreeze(s) {
    var t = s.__t, inner = s.__inner, rules = s.__rules;
    if (inner && t === "object") { for (var key in inner) __mvFreeze(inner[key]); freeze(inner); }
    else if (inner && t === "array") __mvFreeze(inner);
    for (var i = 0; i < rules.length; i++) freeze(rules[i]);
    freeze(rules);
    defineProperty(s, "__plan", __descriptor(__mvCompile(s), true));
    freeze(s);
  }
  function __mvMake(type) { return function __build(inner) { return new Schema(type, inner); }; }
  var $mv = freeze({ object: __mvMake("object"), string: __mvMake("string"), number: __mvMake("number"),
                     boolean: __mvMake("boolean"), date: __mvMake("date"), array: __mvMake("array"),
                     any: __mvMake("any") });
  freeze(SP);
  defineProperty(global, "$mv", { value: $mv, writable: false, enumerable: true, configurable: false });

  // The accessor a stage program's hoisted schema expressions are reached through.
  function __hoister(makers) {
    var cache = setPrototypeOf([], null);
    return function __mvh(i) {
      var base = cache[i];
      if (base === undefined) {
        base = makers[i]();  // throws (and is retried next time) exactly where the inline code would
        if (!__mvSealable(base)) return base;  // not a plain schema tree: evaluated every time
        __mvFreeze(base);
        cache[i] = base;
      }
      return create(base);
    };
  }

  // ---------------------------------------------------------------- stages
  var stages = setPrototypeOf([], null);
  var checkStandardEvent = false;
  var memoryMessage = "memory limit exceeded";
  var maxResultBytes = 1048576;

  function __stageScript(name, make, hoisted) {
    stages[stages.length] = { name: name, run: make(__hoister(hoisted)) };
  }
  // `reusable`: the bundle proved the codec keeps no state between calls (codec_reuse.py), so
  // its top level runs once; otherwise the factory runs per uplink and each sees it fresh.
  // `bindThis`: the codec mentions `this`, which is then its exports (fresh per uplink).
  function __stageCodec(name, style, strict, reusable, bindThis, factory) {
    var shared = null;
    stages[stages.length] = { name: name, run: function __codecRun(payload) {
      __codecInput(payload);
      var bytes = inBytes, fPort = inPort, when = inWhen;
      inBytes = null;
      var fns = reusable ? (shared !== null ? shared : (shared = factory())) : factory();
      var fn = fns[style], out;
      if (typeof fn !== "function") throw __plain("codec does not define " + style);
      // `this` is never shared state: undefined, or exports no other uplink sees.
      var self = !bindThis ? undefined
        : reusable ? { decodeUplink: fns.decodeUplink, Decoder: fns.Decoder, Decode: fns.Decode } : fns;
      if (style === "decodeUplink") {
        var input = __uplinkInput(bytes, fPort, when);
        out = self === undefined ? fn(input) : callWith(fn, self, input);
      } else if (style === "Decoder") out = { data: self === undefined ? fn(bytes, fPort) : callWith(fn, self, bytes, fPort) };
      else {
        var variables = payload.variables;
        if (variables === null || typeof variables !== "object") variables = {};
        out = { data: self === undefined ? fn(fPort, bytes, variables) : callWith(fn, self, fPort, bytes, variables) };
      }
      if (!strict) return out;
      if (out === null || typeof out !== "object") throw __plain(style + " returned " + (out === null ? "null" : typeof out) + ", expected an object");
      var errors = out.errors;
      if (isArray(errors) && errors.length) throw __plain("codec reported errors: " + join(errors, "; "));
      var data = out.data;
      if (data === undefined) throw __plain(style + " returned no data");
      return { data: data, warnings: out.warnings || [], fPort: fPort, recvTime: when, uplink: payload };
    } };
  }

  // ---------------------------------------------------------------- fresh globals per event
  // Top-level declarations of a script are already local (every stage is wrapped in a
  // function), so a script can only create a global by assigning to an undeclared name
  // (sloppy mode) or by writing globalThis.x. Both are a [[Set]] of a property globalThis does
  // not own, which walks the prototype chain: a Proxy placed there sees every such write and
  // raises `dirty`. Before each event, if dirty, the globals added since seal() are deleted.
  // The per-event cost is a flag test and a prototype check (a template that swaps the global
  // object's prototype gets the guard back and a full clean-up); enumerating the global object
  // each time cost ~6 us/event.
  var dirty = false, guard = null, baseline = null;
  function __installGuard(parent) {
    var handler = create(null);
    handler.set = function __set(target, key, value, receiver) {
      dirty = true;
      defineProperty(receiver, key, __descriptor(value));
      return true;
    };
    guard = new ProxyCtor(create(parent), handler);
    setPrototypeOf(global, guard);
  }
  function __freshGlobals() {
    if (getPrototypeOf(global) !== guard) setPrototypeOf(global, guard);
    dirty = false;
    var names = getOwnPropertyNames(global);
    for (var i = 0; i < names.length; i++) {
      if (!baseline[names[i]]) { try { delete global[names[i]]; } catch (e) {} }
    }
  }

  // ---------------------------------------------------------------- errors
  var MAX_MESSAGE = 4000;
  function __lineOf(e) {
    var stack;
    try { stack = e.stack; } catch (x) { return null; }
    if (typeof stack !== "string") return null;
    var at = 0;
    for (;;) {
      var start = indexOf(stack, "at ", at);
      if (start < 0) return null;
      var open = indexOf(stack, " (<input>:", start);
      var end = indexOf(stack, "\n", start);
      if (end < 0) end = stack.length;
      at = end;
      if (open < 0 || open > end) continue;
      var fn = strSlice(stack, start + 3, open);
      if (indexOf(fn, " ") >= 0 || strSlice(fn, 0, 2) === "__") continue;
      var line = parseInteger(strSlice(stack, open + 10, end), 10);
      return isFiniteNumber(line) ? line : null;
    }
  }
  // What a thrown value says, without letting a hostile value (throwing getters, a cyclic
  // object, a Proxy) throw again.
  function __describe(e) {
    try {
      if (e === null) return memoryMessage + " (or the script threw null)";
      if (e instanceof ErrorCtor) {
        var name = e.name, message = e.message;
        if (e.__noLine) return toStr(message);
        if (name === "InternalError" && message === "out of memory") return memoryMessage;
        return toStr(name) + ": " + toStr(message);
      }
      return "uncaught " + toJSON(e);
    } catch (x) {}
    try { return "uncaught " + toStr(e); } catch (x) { return "uncaught exception that cannot be described"; }
  }
  function __clip(text) {
    return text.length > MAX_MESSAGE ? strSlice(text, 0, MAX_MESSAGE) + "... (" + text.length + " characters)" : text;
  }
  function __errorText(stage, message, line, steps) {
    return '{"e":{"stage":' + toJSON(stage) + ',"message":' + toJSON(__clip(message)) +
      (line !== null ? ',"line":' + line : "") + "}" + (steps !== null ? ',"s":{' + steps + "}" : "") + "}";
  }
  function __thrownText(stage, e, steps) {
    var message = __describe(e), line = null;
    try { line = e instanceof ErrorCtor && !e.__noLine ? __lineOf(e) : null; } catch (x) {}
    return __errorText(stage, message, line, steps);
  }
  function __standardEventProblem(ev) {
    if (ev === null || typeof ev !== "object" || isArray(ev)) return "result must be a Standard Event object, got " + (ev === null ? "null" : isArray(ev) ? "an array" : typeof ev);
    var type = ev.eventType;
    if (typeof type !== "string" || !type) return "Standard Event: eventType must be a non-empty string";
    var id = ev.eventId;
    if (typeof id !== "string" || !id) return "Standard Event: eventId must be a non-empty string";
    var data = ev.data;
    if (data === null || typeof data !== "object" || isArray(data)) return "Standard Event: data must be an object";
    var metadata = ev.metadata;
    if (metadata !== undefined && metadata !== null && (typeof metadata !== "object" || isArray(metadata))) return "Standard Event: metadata must be an object";
    var created = ev.created;
    if (typeof created !== "string" || isNaNValue(dateParse(created))) return "Standard Event: created must be an ISO-8601 string";
    return null;
  }

  // ---------------------------------------------------------------- serialising a result
  // Each event's result becomes JSON inside that event's own try/catch (and time budget): a
  // cyclic object, a BigInt, a throwing getter or a toJSON that never returns fails that event
  // alone, and a result is frozen as it was when its event ended.
  var problem = "";
  function __size(bytes, whole) {
    var unit = bytes >= 1048576 ? 1048576 : bytes >= 1024 ? 1024 : 1;
    if (unit === 1) return bytes + " bytes";
    var text = toFixed(bytes / unit, 1);
    if (whole && strSlice(text, -2) === ".0") text = strSlice(text, 0, -2);
    return text + (unit === 1024 ? " KB" : " MB");
  }
  function __sizeMessage(bytes) {
    return "result of " + __size(bytes, false) + " exceeds the limit of " + __size(maxResultBytes, true);
  }
  function __utf8Length(text) {
    var n = text.length, extra = 0;
    for (var i = 0; i < n; i++) {
      var c = charCodeAt(text, i);
      if (c >= 0x80) extra += c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 1 : 2;
    }
    return n + extra;
  }
  // A JSON size estimate that allocates almost nothing, for a result too big to serialise.
  function __estimate(value, depth) {
    if (value === null || value === undefined) return 4;
    var type = typeof value;
    if (type === "string") return value.length + 2;
    if (type === "number" || type === "boolean") return 8;
    if (type !== "object" || depth > 64) return 0;
    if (typeof value.toJSON === "function") return 8;
    var size = 2, i;
    if (isArray(value)) { for (i = 0; i < value.length; i++) size += 1 + __estimate(value[i], depth + 1); return size; }
    var keys = getOwnPropertyNames(value);
    for (i = 0; i < keys.length; i++) size += keys[i].length + 4 + __estimate(value[keys[i]], depth + 1);
    return size;
  }
  function __whyNot(e, value) {
    if (e instanceof TypeErrorCtor) {
      var message = e.message;
      if (message === "circular reference") return "result is not serialisable: cyclic object";
      var text = toStr(message);  // "bigint are forbidden ..." or (QuickJS-ng) "BigInt are forbidden ..."
      if (indexOf(text, "bigint") >= 0 || indexOf(text, "BigInt") >= 0) return "result is not serialisable: BigInt value";
    }
    if (e === null || (e instanceof ErrorCtor && e.name === "InternalError" && e.message === "out of memory")) {
      var size = 0;
      try { size = __estimate(value, 0); } catch (x) {}
      return size > maxResultBytes ? __sizeMessage(size) : memoryMessage + " while serialising the result";
    }
    return "result is not serialisable: " + __describe(e);
  }
  // JSON text of `value`, or null with `problem` saying why not.
  function __serialise(value) {
    var text;
    phase = "serialise";
    try { text = toJSON(value); }
    catch (e) { phase = "event"; problem = __whyNot(e, value); return null; }
    phase = "event";
    if (typeof text !== "string") {
      problem = "result is not serialisable: " + (typeof value === "function" ? "a function" : typeof value === "symbol" ? "a symbol" : "undefined");
      return null;
    }
    var n = text.length;
    if (n > maxResultBytes || (n * 3 > maxResultBytes && (n = __utf8Length(text)) > maxResultBytes)) {
      problem = __sizeMessage(n);
      return null;
    }
    return text;
  }

  // ---------------------------------------------------------------- one event
  var curStage = "", phase = "";
  function __runEvent(payload) {
    var value = payload, last = "";
    for (var k = 0; k < stages.length; k++) {
      var st = stages[k], out;
      curStage = last = st.name;
      try { out = st.run(value); }
      catch (e) { return __thrownText(last, e, null); }
      if (out === undefined) return __errorText(last, "result is undefined: the script must set result", null, null);
      value = out;
    }
    if (checkStandardEvent) {
      var bad = __standardEventProblem(value);
      if (bad !== null) return __errorText("transform", bad, null, null);
    }
    var text = __serialise(value);
    return text === null ? __errorText(last, problem, null, null) : '{"r":' + text + "}";
  }
  // The same with each stage's output in `s`, serialised as its stage ends.
  function __traceEvent(payload) {
    var value = payload, steps = "", last = "", step = null;
    for (var k = 0; k < stages.length; k++) {
      var st = stages[k], out;
      curStage = last = st.name;
      try { out = st.run(value); }
      catch (e) { return __thrownText(last, e, steps); }
      if (out === undefined) return __errorText(last, "result is undefined: the script must set result", null, steps);
      step = __serialise(out);
      if (step === null) return __errorText(last, problem, null, steps);
      steps += (steps ? "," : "") + toJSON(last) + ":" + step;
      value = out;
    }
    if (checkStandardEvent) {
      var bad = __standardEventProblem(value);
      if (bad !== null) return __errorText("transform", bad, null, steps);
    }
    if (!stages.length) step = __serialise(value);
    if (step === null) return __errorText(last, problem, null, steps);
    return '{"r":' + step + ',"s":{' + steps + "}}";
  }

  // ---------------------------------------------------------------- the batch loop
  // One crossing: the batch is parsed once (load), events [from, to) run (run), and the
  // result is one string: each event's JSON, joined by ",\n" (a sequence JSON text never
  // holds, so the host can split it without parsing). If the host interrupts (time or memory
  // limit), partial() says how far the loop got. `last`: the host needs the batch no more, so
  // it is dropped now rather than held (and scanned by the garbage collector) until the next.
  var items = null, seg = null, segCount = 0, cur = -1;
  function __load(json) {
    items = null;
    var parsed = parseJSON(json);
    if (!isArray(parsed)) throw new TypeErrorCtor("the batch is not a JSON array");
    items = parsed;
    return items.length;
  }
  function __run(from, to, trace, last) {
    seg = setPrototypeOf([], null);  // no inherited setters can intercept the writes below
    segCount = 0;
    for (var i = from; i < to; i++) {
      cur = i; curStage = ""; phase = "event";
      var text;
      try {
        if (dirty || getPrototypeOf(global) !== guard) __freshGlobals();
        text = trace === true ? __traceEvent(items[i]) : __runEvent(items[i]);
      } catch (e) {
        try { text = __thrownText(curStage || stages[0].name, e, null); }
        catch (x) { text = '{"e":{"stage":"script","message":"the event failed and its error could not be reported"}}'; }
      }
      seg[segCount++] = text;
    }
    cur = -1; phase = "join";
    if (last === true) items = null;
    var out = join(seg, ",\n");
    seg = null; phase = "";
    return out;
  }
  // `{cur, stage, phase, n}` on the first line, then the n results the crossing had finished.
  function __partial() {
    return '{"cur":' + cur + ',"stage":' + toJSON(curStage) + ',"phase":' + toJSON(phase) +
      ',"n":' + segCount + "}\n" + (seg !== null && segCount ? join(seg, ",\n") : "");
  }
  // ---------------------------------------------------------------- pristine intrinsics
  // Before any event runs, every intrinsic reachable from the global object (constructors,
  // their prototypes, Math, JSON, Reflect, console, ... and every function or object reachable
  // from their properties and accessors) is frozen, and the global bindings that name them are
  // made read-only. A template can then change no built-in: `Object.prototype.x = 1`,
  // `Math.max = ...` or `JSON = ...` are ignored (sloppy code) or throw (strict code, and
  // defineProperty anywhere), so nothing one event does to them reaches the next event, of
  // this template or another one in the same context. The cost is paid once per context (the
  // walk), none per event. The one visible difference is JavaScript's "override mistake": a
  // plain object cannot get an own property by assignment whose name is a non-writable
  // inherited one (`obj.toString = f`, `obj["constructor"] = v`); object literals,
  // JSON.parse and defineProperty still can.
  function __lockdown() {
    var ownKeys = Reflect.ownKeys, describe = Object.getOwnPropertyDescriptor;
    var seen = new WeakSet(), has = uncurry(WeakSet.prototype.has), add = uncurry(WeakSet.prototype.add);
    var todo = [];
    function __reach(value) {
      if (value !== global && (typeof value === "function" || (typeof value === "object" && value !== null))) {
        nativePush.call(todo, value);
      }
    }
    var names = getOwnPropertyNames(global);
    for (var i = 0; i < names.length; i++) {
      var d = describe(global, names[i]);
      if (d === undefined || !("value" in d)) continue;
      __reach(d.value);
      if (d.configurable || d.writable) {
        defineProperty(global, names[i], { value: d.value, writable: false, configurable: false });
      }
    }
    __reach(getPrototypeOf(global));  // Object.prototype, through the global's own chain
    while (todo.length) {
      var o = todo.pop();
      if (has(seen, o)) continue;
      add(seen, o);
      freeze(o);
      __reach(getPrototypeOf(o));
      var keys = ownKeys(o);
      for (var k = 0; k < keys.length; k++) {
        var p = describe(o, keys[k]);
        if (p === undefined) continue;
        if ("value" in p) __reach(p.value); else { __reach(p.get); __reach(p.set); }
      }
    }
  }

  function __seal(config) {
    var options = parseJSON(config);
    memoryMessage = toStr(options.memoryMessage);
    checkStandardEvent = options.standardEvent === true;
    maxResultBytes = +options.maxResultBytes;
    delete global.__eventray;
    __lockdown();
    baseline = create(null);
    var names = getOwnPropertyNames(global);
    for (var i = 0; i < names.length; i++) baseline[names[i]] = true;
    __installGuard(getPrototypeOf(global));
  }

  defineProperty(global, "__eventray", { value: freeze({
    stage: __stageScript, codec: __stageCodec, seal: __seal, load: __load, run: __run, partial: __partial
  }), writable: false, enumerable: false, configurable: true });
})(globalThis);
