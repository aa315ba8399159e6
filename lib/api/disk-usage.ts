/**
 * `docker system df` over the flock. Every host holds its own copy of an image (and of a volume:
 * flocker creates volumes everywhere), and the CLI derives ACTIVE and RECLAIMABLE from the
 * per-item counts, so one host's entry cannot stand for the others: an image or volume in use on
 * one host would read as unused wherever another host's entry was kept.
 */
type Json = Record<string, unknown>;

const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
/** Sizes the engine did not compute are -1: summed only over the hosts that did. */
const sumSizes = (values: unknown[]) => {
  const known = values.filter((v) => typeof v === "number" && v >= 0) as number[];
  return known.length ? known.reduce((a, b) => a + b, 0) : -1;
};

function byKey(items: Json[], key: string): Json[][] {
  const groups = new Map<string, Json[]>();
  for (const item of items) {
    const k = String(item[key]);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return [...groups.values()];
}

/**
 * One entry per image: containers counted over every host. An image in use counts the copies on
 * the hosts that use it (the CLI's RECLAIMABLE is the layers' total less the in-use images' unique
 * size, so the unused copies elsewhere stay reclaimable, as `image prune -a` would free them); an
 * unused image, one copy, as `docker images` shows it.
 */
function mergeImages(copies: Json[]): Json {
  const used = copies.filter((c) => num(c.Containers) > 0);
  const counted = used.length ? used : copies.slice(0, 1);
  const size = sumSizes(counted.map((c) => c.Size));
  const every = (field: string) => [...new Set(copies.flatMap((c) => (c[field] as string[] | null) ?? []))];
  return {
    ...copies[0],
    RepoTags: every("RepoTags"),
    RepoDigests: every("RepoDigests"),
    Containers: used.reduce((n, c) => n + num(c.Containers), 0),
    Size: size,
    ...("VirtualSize" in copies[0] ? { VirtualSize: size } : {}), // gone from API 1.44 on
    SharedSize: sumSizes(counted.map((c) => c.SharedSize)),
  };
}

/** One entry per volume name: its copies' sizes and references added up. */
function mergeVolumes(copies: Json[]): Json {
  const usage = copies.map((c) => (c.UsageData ?? {}) as Json);
  const base = copies.find((c) => num(((c.UsageData ?? {}) as Json).RefCount) > 0) ?? copies[0];
  return {
    ...base,
    UsageData: { Size: sumSizes(usage.map((u) => u.Size)), RefCount: usage.reduce((n, u) => n + num(u.RefCount), 0) },
  };
}

/** The hosts' answers as one; fields no host gave (`?type=` asks for some only) stay out. */
export function mergeDiskUsage(answers: Json[]): Json {
  const all = (field: string) => answers.flatMap((a) => (a[field] as Json[] | null) ?? []);
  const merged: Json = {
    LayersSize: answers.reduce((n, a) => n + num(a.LayersSize), 0),
    Images: byKey(all("Images"), "Id").map(mergeImages),
    Containers: all("Containers"),
    Volumes: byKey(all("Volumes"), "Name").map(mergeVolumes),
    BuildCache: all("BuildCache"),
  };
  for (const field of Object.keys(merged)) if (!answers.some((a) => field in a)) delete merged[field];
  return merged;
}
