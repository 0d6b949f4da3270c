// Validate an AsyncAPI document with the real @asyncapi/parser; print what it found as JSON.
// Usage: node validate_asyncapi.mjs PARSER_DIR < document.json
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const require = createRequire(`${process.argv[2]}/`);
const { Parser } = require("@asyncapi/parser");
const text = readFileSync(0, "utf8");
const { document, diagnostics } = await new Parser().parse(text);
const out = {
  valid: document !== undefined,
  diagnostics: diagnostics.map((d) => ({
    severity: d.severity, code: d.code, message: d.message, path: d.path.join("."),
  })),
};
if (document) {
  out.version = document.version();
  out.operations = document.operations().all().map((op) => ({
    id: op.id(), action: op.action(),
    messages: op.messages().all().map((m) => m.name()),
    replies: op.reply() ? op.reply().messages().all().map((m) => m.name()) : [],
  }));
  out.messages = document.allMessages().all().map((m) => m.name());
}
console.log(JSON.stringify(out));
