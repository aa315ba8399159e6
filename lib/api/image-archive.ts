/**
 * `docker save` of images that live on different hosts: each host saves the ones it holds, and
 * the archives are joined into one, as one engine writes it: every entry once (the layer
 * directories two archives share are written once: their names are content ids), one
 * `manifest.json` listing every image and one `repositories`. Bytes stream through; only those
 * two small files are read.
 */

const BLOCK = 512;
/** The files of an image archive that describe all of it: merged, written at the end. */
const MANIFEST = "manifest.json";
const REPOSITORIES = "repositories";
/** manifest.json and repositories are small (a few hundred bytes per image): past this, not an image archive. */
const INDEX_LIMIT = 16 * 1024 * 1024;

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder();

/** A NUL-terminated field of a tar header. */
function field(header: Uint8Array, start: number, length: number, decoder = latin1): string {
  const bytes = header.subarray(start, start + length);
  const nul = bytes.indexOf(0);
  return decoder.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

/** A numeric field: octal text, or base-256 (high bit set) for sizes past 8 GiB. */
function numberField(header: Uint8Array, start: number, length: number): number {
  if (header[start] & 0x80) {
    let n = header[start] & 0x7f;
    for (let i = start + 1; i < start + length; i++) n = n * 256 + header[i];
    return n;
  }
  const text = field(header, start, length).trim();
  return text ? parseInt(text, 8) : 0;
}

const padded = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/** The `path` and `size` records of a PAX extended header ("LEN key=value\n" each). */
function paxRecords(data: Uint8Array): { path?: string; size?: number } {
  const out: { path?: string; size?: number } = {};
  const text = utf8.decode(data);
  for (let i = 0; i < text.length;) {
    const space = text.indexOf(" ", i);
    const length = parseInt(text.slice(i, space), 10);
    if (!(length > 0)) break;
    const record = text.slice(space + 1, i + length - 1);
    const eq = record.indexOf("=");
    const key = record.slice(0, eq);
    if (key === "path") out.path = record.slice(eq + 1);
    if (key === "size") out.size = Number(record.slice(eq + 1));
    i += length;
  }
  return out;
}

/** A regular file's tar header (ustar), for the merged index files. */
function fileHeader(name: string, size: number): Uint8Array {
  const header = new Uint8Array(BLOCK);
  const put = (text: string, at: number) => header.set(new TextEncoder().encode(text), at);
  put(name, 0);
  put("0000644\0", 100); // mode
  put("0000000\0", 108); // uid
  put("0000000\0", 116); // gid
  put(size.toString(8).padStart(11, "0") + "\0", 124);
  put("00000000000\0", 136); // mtime: as the engine writes these two files
  put("        ", 148); // the checksum counts itself as spaces
  header[156] = 0x30; // '0': a regular file
  put("ustar\x0000", 257);
  let sum = 0;
  for (const byte of header) sum += byte;
  put(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return header;
}

function fileEntry(name: string, content: string): Uint8Array[] {
  const data = new TextEncoder().encode(content);
  return [fileHeader(name, data.length), data, new Uint8Array(padded(data.length) - data.length)];
}

type Manifest = unknown[];
type Repositories = Record<string, Record<string, string>>;

/**
 * Join image archives (tar streams of `GET /images/get`) into one. The archives are read one
 * after the other; an archive that is not one (broken framing) errors the joined stream.
 */
export function joinImageArchives(archives: ReadableStream<Uint8Array>[]): ReadableStream<Uint8Array> {
  const written = new Set<string>();
  const manifest: Manifest = [];
  const repositories: Repositories = {};
  let index = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;

  // Per archive: where the parser is.
  let header = new Uint8Array(BLOCK);
  let filled = 0;
  /** Bytes of the current entry's data (and padding) still to come, and what to do with them. */
  let remaining = 0;
  let mode: "pass" | "skip" | "collect" = "pass";
  let collected: Uint8Array[] = [];
  let collecting = "";
  /** Extended headers (PAX 'x', GNU 'L') read before the entry they describe: written with it. */
  let extended: Uint8Array[] = [];
  let longName: string | undefined;
  let paxSize: number | undefined;
  let extendedData: "pax" | "gnu" | undefined;
  /** The size of the entry being read (without padding). */
  let headerSize = 0;
  /** This archive's end-of-archive block was read: the rest of it is read and dropped. */
  let finished = false;

  const reset = () => {
    filled = 0;
    remaining = 0;
    mode = "pass";
    extended = [];
    longName = undefined;
    paxSize = undefined;
    extendedData = undefined;
    finished = false;
  };

  /** A complete header block: decide what its entry's data does. */
  const onHeader = (out: Uint8Array[]) => {
    if (header.every((b) => b === 0)) {
      finished = true; // end of this archive (its second zero block and any rest are dropped)
      return;
    }
    const type = header[156];
    const size = paxSize ?? numberField(header, 124, 12);
    if (type === 0x78 /* x */ || type === 0x4c /* L */) {
      // Its data is read (small) and kept with the header; the next header is the entry.
      extended.push(header.slice());
      extendedData = type === 0x78 ? "pax" : "gnu";
      mode = "collect";
      collecting = "";
      collected = [];
      remaining = padded(size);
      headerSize = size;
      return;
    }
    const prefix = header[257] === 0x75 /* ustar */ ? field(header, 345, 155) : "";
    const name = longName ?? (prefix ? `${prefix}/${field(header, 0, 100)}` : field(header, 0, 100));
    remaining = padded(size);
    headerSize = size;
    const bare = name.replace(/^\.\//, "");
    if (bare === MANIFEST || bare === REPOSITORIES) {
      if (size > INDEX_LIMIT) throw new Error(`flocker: ${bare} of an image archive is too large`);
      mode = "collect";
      collecting = bare;
      collected = [];
    } else if (written.has(name)) mode = "skip";
    else {
      written.add(name);
      mode = "pass";
      out.push(...extended, header.slice());
    }
    extended = [];
    longName = undefined;
    paxSize = undefined;
  };

  /** The data of a collected entry is complete. */
  const onCollected = () => {
    const data = new Uint8Array(collected.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of collected) {
      data.set(c, at);
      at += c.length;
    }
    const content = data.subarray(0, headerSize);
    if (extendedData) {
      extended.push(data); // written with its entry, padding included
      if (extendedData === "pax") {
        const records = paxRecords(content);
        if (records.path !== undefined) longName = records.path;
        if (records.size !== undefined) paxSize = records.size;
      } else longName = field(content, 0, content.length, utf8);
      extendedData = undefined;
    } else if (collecting === MANIFEST) manifest.push(...(JSON.parse(utf8.decode(content)) as Manifest));
    else {
      const repos = JSON.parse(utf8.decode(content)) as Repositories;
      for (const [repo, tags] of Object.entries(repos ?? {})) repositories[repo] = { ...repositories[repo], ...tags };
    }
    collected = [];
    collecting = "";
    mode = "pass";
  };

  /** Parse a chunk of the current archive; what passes goes to `out`. */
  const feed = (chunk: Uint8Array, out: Uint8Array[]) => {
    let i = 0;
    while (i < chunk.length && !finished) {
      if (remaining > 0) {
        const take = Math.min(remaining, chunk.length - i);
        const piece = chunk.subarray(i, i + take);
        if (mode === "pass") out.push(piece);
        else if (mode === "collect") collected.push(piece.slice());
        remaining -= take;
        i += take;
        if (remaining === 0 && mode === "collect") onCollected();
        continue;
      }
      const take = Math.min(BLOCK - filled, chunk.length - i);
      header.set(chunk.subarray(i, i + take), filled);
      filled += take;
      i += take;
      if (filled === BLOCK) {
        filled = 0;
        onHeader(out);
        header = new Uint8Array(BLOCK);
      }
    }
  };

  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        if (index >= archives.length) {
          const tail = [
            ...fileEntry(MANIFEST, JSON.stringify(manifest)),
            ...fileEntry(REPOSITORIES, JSON.stringify(repositories)),
            new Uint8Array(2 * BLOCK),
          ];
          for (const piece of tail) controller.enqueue(piece);
          controller.close();
          return;
        }
        reader ??= archives[index].getReader();
        const { done, value } = await reader.read();
        if (done) {
          if (!finished) throw new Error("flocker: an image archive ended midway");
          reader = undefined;
          index++;
          reset();
          continue;
        }
        if (finished) continue; // past its end-of-archive block: dropped
        const out: Uint8Array[] = [];
        feed(value, out);
        for (const piece of out) controller.enqueue(piece);
        if (out.length) return;
      }
    },
    async cancel(reason) {
      await reader?.cancel(reason).catch(() => {});
      for (let i = index + 1; i < archives.length; i++) await archives[i].cancel(reason).catch(() => {});
    },
  });
}
