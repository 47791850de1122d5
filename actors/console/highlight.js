// A small JavaScript tokenizer for the template editors' syntax highlighting: keywords,
// strings (template literals with their ${...} parts tokenized as code), numbers, comments,
// regular expression literals, punctuation. Build-free and DOM-free (tokenize), so it also
// runs under node for its unit test; render() draws the tokens as spans via textContent.

const KEYWORDS = new Set(("break case catch class const continue debugger default delete do else " +
  "export extends finally for function if import in instanceof let new of return static super " +
  "switch this throw try typeof var void while with yield async await").split(" "));
const LITERALS = new Set(["true", "false", "null", "undefined", "NaN", "Infinity"]);
// After these keywords an expression starts, so a "/" opens a regular expression.
const BEFORE_EXPR = new Set(["return", "typeof", "instanceof", "in", "of", "new", "delete",
  "void", "throw", "case", "do", "else", "yield", "await"]);

const IDENT = /[A-Za-z_$\u00c0-\uffff][\w$\u00c0-\uffff]*/y;
const NUMBER = /(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)n?/y;
const SPACE = /\s+/y;
const PUNCT = /=>|\.\.\.|\?\?=?|\?\.|[=!]==?|[<>]=?|&&=?|\|\|=?|\*\*=?|[-+*/%&|^]=?|\+\+|--|<<=?|>>>?=?|[{}()[\];,.:?~!]/y;

function sticky(re, src, i) { re.lastIndex = i; const m = re.exec(src); return m ? m[0] : null; }

// End (exclusive) of a quoted string starting at i, or of the line if it is unterminated.
function quoted(src, i) {
  const q = src[i];
  let j = i + 1;
  while (j < src.length && src[j] !== q && src[j] !== "\n") j += src[j] === "\\" ? 2 : 1;
  return Math.min(src.length, j < src.length && src[j] === q ? j + 1 : j);
}

// End of a regular expression literal starting at i, or -1 when it is none (a line break).
function regex(src, i) {
  let j = i + 1, inClass = false;
  while (j < src.length) {
    const c = src[j];
    if (c === "\n") return -1;
    if (c === "\\") { j += 2; continue; }
    if (c === "[") inClass = true;
    else if (c === "]") inClass = false;
    else if (c === "/" && !inClass) { j++; while (j < src.length && /[a-z]/.test(src[j])) j++; return j; }
    j++;
  }
  return -1;
}

// The tokens of src, in order, covering it whole: [{type, text}], type one of "keyword",
// "literal", "string", "number", "comment", "regex", "punct", "ident", "space".
export function tokenize(src) {
  const out = [];
  const push = (type, text) => { if (text) out.push({ type, text }); };
  const braces = []; // per open ${ of a template literal, the braces opened inside it
  let i = 0, exprStart = true;
  const template = () => { // from a "`" or a "}" closing ${...}: up to "`" or "${"
    let j = i;
    while (j < src.length && src[j] !== "`" && !(src[j] === "$" && src[j + 1] === "{")) j += src[j] === "\\" ? 2 : 1;
    j = Math.min(j, src.length);
    if (src[j] === "`") { push("string", src.slice(i, j + 1)); i = j + 1; exprStart = false; }
    else if (j < src.length) { push("string", src.slice(i, j)); push("punct", "${"); braces.push(0); i = j + 2; exprStart = true; }
    else { push("string", src.slice(i)); i = src.length; }
  };
  while (i < src.length) {
    const c = src[i], next = src[i + 1];
    let m;
    if ((m = sticky(SPACE, src, i))) { push("space", m); i += m.length; continue; }
    if (c === "/" && next === "/") {
      const end = src.indexOf("\n", i);
      const j = end < 0 ? src.length : end;
      push("comment", src.slice(i, j)); i = j; continue;
    }
    if (c === "/" && next === "*") {
      const end = src.indexOf("*/", i + 2);
      const j = end < 0 ? src.length : end + 2;
      push("comment", src.slice(i, j)); i = j; continue;
    }
    if (c === '"' || c === "'") { const j = quoted(src, i); push("string", src.slice(i, j)); i = j; exprStart = false; continue; }
    if (c === "`") { push("string", "`"); i += 1; template(); continue; }
    if (c === "/" && exprStart) {
      const j = regex(src, i);
      if (j > 0) { push("regex", src.slice(i, j)); i = j; exprStart = false; continue; }
    }
    if (/\d/.test(c) || (c === "." && /\d/.test(next || ""))) {
      m = sticky(NUMBER, src, i);
      if (m) { push("number", m); i += m.length; exprStart = false; continue; }
    }
    if ((m = sticky(IDENT, src, i))) {
      const type = KEYWORDS.has(m) ? "keyword" : LITERALS.has(m) ? "literal" : "ident";
      push(type, m); i += m.length;
      exprStart = type === "keyword" && BEFORE_EXPR.has(m);
      continue;
    }
    if (braces.length && c === "{") braces[braces.length - 1]++;
    if (braces.length && c === "}") {
      if (braces[braces.length - 1] === 0) { braces.pop(); push("punct", "}"); i += 1; template(); continue; }
      braces[braces.length - 1]--;
    }
    m = sticky(PUNCT, src, i) || c;
    push("punct", m); i += m.length;
    exprStart = !/^[)\]}]$/.test(m);
  }
  return out;
}

// Draw src into el (a <pre>) as spans of class "tok-<type>"; plain text for identifiers and
// white space. Only textContent: the script's text never becomes markup.
export function render(el, src) {
  while (el.firstChild) el.firstChild.remove();
  for (const t of tokenize(src)) {
    if (t.type === "ident" || t.type === "space") el.append(document.createTextNode(t.text));
    else {
      const span = document.createElement("span");
      span.className = `tok-${t.type}`;
      span.textContent = t.text;
      el.append(span);
    }
  }
  // A final line break would be drawn as nothing: a space keeps the last line's height, so
  // the layer scrolls exactly as the textarea over it.
  el.append(document.createTextNode(src.endsWith("\n") ? " " : "\n "));
}
