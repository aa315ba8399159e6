/** Runtime glue: credentials from a docker config.json-style file (`{"auths": {"host": {"auth": "base64(user:pass)"}}}`). */
import { readFileSync } from "node:fs";
import type { RegistryCredentials } from "../context.ts";

export function registryAuthFromFile(path: string) {
  return (registry: string): Promise<RegistryCredentials | undefined> => {
    const file = JSON.parse(readFileSync(path, "utf8")) as { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }> };
    const entry = file.auths?.[registry] ?? file.auths?.[`https://${registry}`] ?? file.auths?.[`http://${registry}`];
    if (!entry) return Promise.resolve(undefined);
    let { username, password } = entry;
    if (entry.auth) [username, password] = atob(entry.auth).split(/:(.*)/s);
    return Promise.resolve({ username, password, serveraddress: registry, identitytoken: entry.identitytoken });
  };
}
