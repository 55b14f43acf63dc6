// Validates an OpenAPI document with a third-party validator (@seriousme/openapi-schema-validator,
// the OpenAPI 3.1 JSON schema) and checks that every $ref resolves. Run from tests/it/openapi.rs:
//   node tests/openapi/validate.mjs <file.json>
// Prints one JSON line: {"valid": bool, "version": "3.1", "errors": [...]}; exits 1 when invalid.
import { readFile } from "node:fs/promises";
import { Validator } from "@seriousme/openapi-schema-validator";

const file = process.argv[2];
if (!file) {
  console.log(JSON.stringify({ valid: false, errors: ["usage: validate.mjs <file.json>"] }));
  process.exit(2);
}
const spec = JSON.parse(await readFile(file, "utf8"));
const validator = new Validator();
const res = await validator.validate(spec);
const errors = res.valid ? [] : res.errors;
if (res.valid) {
  try {
    validator.resolveRefs();
  } catch (e) {
    errors.push(`unresolved $ref: ${e.message}`);
  }
}
const valid = errors.length === 0;
console.log(JSON.stringify({ valid, version: validator.version, errors }));
process.exit(valid ? 0 : 1);
