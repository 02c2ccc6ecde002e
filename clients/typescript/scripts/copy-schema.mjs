// tsc emits no file for a .d.ts input: copy the generated schema beside the declarations that
// import it.
import { copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
copyFileSync(join(root, "src/schema.d.ts"), join(root, "dist/schema.d.ts"));
