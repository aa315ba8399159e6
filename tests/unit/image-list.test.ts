/** The image list's `since` / `before` bounds compare full creation times (lib/api/image-list.ts). */
import { describe, expect, test } from "bun:test";
import { nanosOf } from "../../lib/api/image-list.ts";

describe("nanosOf: an engine's RFC 3339 creation time, to the nanosecond", () => {
  test("orders two times of one second as the engine does", () => {
    const a = nanosOf("2026-11-29T18:32:01.040396353Z")!;
    const b = nanosOf("2026-11-29T18:32:01.08733205Z")!; // Go trims trailing zeros
    expect(b - a).toBe(46_935_697n);
    expect(a / 1_000_000_000n).toBe(BigInt(Date.parse("2026-11-29T18:32:01Z") / 1000));
  });
  test("whole seconds and offsets", () => {
    expect(nanosOf("2026-11-29T18:32:01Z")).toBe(BigInt(Date.parse("2026-11-29T18:32:01Z")) * 1_000_000n);
    expect(nanosOf("2026-11-29T19:32:01.5+01:00")).toBe(nanosOf("2026-11-29T18:32:01.500Z"));
  });
  test("not a time: undefined", () => {
    expect(nanosOf("")).toBeUndefined();
    expect(nanosOf("yesterday")).toBeUndefined();
  });
});
