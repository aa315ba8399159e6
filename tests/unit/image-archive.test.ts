/**
 * Joining image archives (lib/api/image-archive.ts, `docker save` over several hosts): archives
 * written by GNU tar in its formats (PAX and GNU long names, which Go's tar also writes for long
 * paths), fed in odd-sized pieces, joined into one that tar reads back: each entry once with its
 * bytes, manifest.json and repositories merged.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { joinImageArchives } from "../../lib/api/image-archive.ts";

const work = mkdtempSync(join(tmpdir(), "flk-archive-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const LONG = `${"a".repeat(64)}/${"b".repeat(80)}/layer.tar`; // past the 100 bytes of a plain header

/** An image archive as tar writes it: a shared layer, one of its own, its manifest and repositories. */
function archive(name: string, format: "pax" | "gnu"): Uint8Array {
  const dir = join(work, name);
  mkdirSync(join(dir, LONG, ".."), { recursive: true });
  mkdirSync(join(dir, "shared"), { recursive: true });
  writeFileSync(join(dir, "shared", "layer.tar"), "shared layer\n".repeat(100));
  writeFileSync(join(dir, LONG), `own layer of ${name}\n`.repeat(300));
  writeFileSync(join(dir, "manifest.json"), JSON.stringify([{ Config: `${name}.json`, RepoTags: [`${name}:1`], Layers: ["shared/layer.tar", LONG] }]));
  writeFileSync(join(dir, "repositories"), JSON.stringify({ [name]: { "1": "x" } }));
  const out = join(work, `${name}.tar`);
  const r = Bun.spawnSync(["tar", `--format=${format}`, "-C", dir, "-cf", out, "shared", LONG.split("/")[0], "manifest.json", "repositories"]);
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return readFileSync(out);
}

/** A stream of `bytes` in pieces of `size`. */
function pieces(bytes: Uint8Array, size: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
}

describe("joinImageArchives", () => {
  for (const format of ["pax", "gnu"] as const) {
    for (const size of [7, 512, 100_000]) {
      test(`${format} archives in pieces of ${size} bytes`, async () => {
        const joined = new Uint8Array(await new Response(joinImageArchives([pieces(archive(`one-${format}`, format), size), pieces(archive(`two-${format}`, format), size)])).arrayBuffer());
        const file = join(work, `joined-${format}-${size}.tar`);
        writeFileSync(file, joined);
        const list = Bun.spawnSync(["tar", "tf", file]).stdout.toString().trim().split("\n");
        expect(new Set(list).size).toBe(list.length);
        expect(list.filter((n) => n === "shared/layer.tar").length).toBe(1);
        expect(list.filter((n) => n === LONG).length).toBe(1); // both had one there: the first one's
        const out = join(work, `out-${format}-${size}`);
        mkdirSync(out);
        expect(Bun.spawnSync(["tar", "-C", out, "-xf", file]).exitCode).toBe(0);
        expect(readFileSync(join(out, LONG), "utf8")).toBe(`own layer of one-${format}\n`.repeat(300));
        const manifest = JSON.parse(readFileSync(join(out, "manifest.json"), "utf8"));
        expect(manifest.map((m: { RepoTags: string[] }) => m.RepoTags[0])).toEqual([`one-${format}:1`, `two-${format}:1`]);
        expect(JSON.parse(readFileSync(join(out, "repositories"), "utf8"))).toEqual({ [`one-${format}`]: { "1": "x" }, [`two-${format}`]: { "1": "x" } });
      });
    }
  }

  test("an archive cut short errors the joined stream (no archive that looks whole)", async () => {
    const bytes = archive("cut", "pax");
    const joined = joinImageArchives([pieces(bytes.subarray(0, 1500), 512)]);
    await expect(new Response(joined).arrayBuffer()).rejects.toThrow("ended midway");
  });
});
