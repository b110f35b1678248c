// A typed Trellis client for TypeScript, over the types `openapi-typescript`
// generates from openapi/openapi.json (`schema.d.ts`, not checked in) and
// `openapi-fetch`. CI generates the types and type-checks this file
// (crates/app/tests/typescript_client.rs): every operation of the spec is
// called here, so a spec change that breaks a client breaks the build.
//
//   npx openapi-typescript ../../openapi.json -o schema.d.ts
//   npm install openapi-fetch

import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Platform = "ios" | "android" | "web";
export type NewUpload = Schemas["CreateUploadRequest"];
export type AvatarUpload = Extract<NewUpload, { purpose: "avatar" }>;

export interface AppInfo {
  platform: Platform;
  version: string;
}

/** A client that signs every call with a fresh Firebase ID token. */
export function trellis(baseUrl: string, idToken: () => Promise<string>, app: AppInfo) {
  const client = createClient<paths>({ baseUrl });
  client.use({
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await idToken()}`);
      request.headers.set("X-App-Platform", app.platform);
      request.headers.set("X-App-Version", app.version);
      return request;
    },
  });
  return {
    getMe: () => client.GET("/api/v1/me"),
    patchMe: (patch: Schemas["UpdateProfileRequest"]) => client.PATCH("/api/v1/me", { body: patch }),
    deleteMe: () => client.DELETE("/api/v1/me"),
    exportMe: () => client.GET("/api/v1/me/export"),
    sendTestPush: () => client.POST("/api/v1/me/test-push"),
    listPushTokens: (cursor?: string, limit?: number) =>
      client.GET("/api/v1/push-tokens", { params: { query: { cursor, limit } } }),
    registerPushToken: (token: string, platform: Platform) =>
      client.POST("/api/v1/push-tokens", { body: { token, platform } }),
    unregisterPushToken: (token: string) =>
      client.POST("/api/v1/push-tokens/unregister", { body: { token } }),
    /** @deprecated the token ends up in URLs; use unregisterPushToken. */
    unregisterPushTokenInPath: (token: string) =>
      client.DELETE("/api/v1/push-tokens/{token}", { params: { path: { token } } }),
    createUpload: (upload: NewUpload) => client.POST("/api/v1/uploads", { body: upload }),
    listUploads: () => client.GET("/api/v1/uploads"),
    completeUpload: (id: string) =>
      client.POST("/api/v1/uploads/{id}/complete", { params: { path: { id } } }),
    media: (id: string) => client.GET("/media/{id}", { params: { path: { id } } }),
    healthz: () => client.GET("/healthz"),
    readyz: () => client.GET("/readyz"),
  };
}

/** Uploads an avatar: presign, post the form to the store, complete. */
export async function uploadAvatar(
  api: ReturnType<typeof trellis>,
  file: Blob,
): Promise<string | null> {
  const { data: upload, error } = await api.createUpload({
    purpose: "avatar",
    content_type: file.type as AvatarUpload["content_type"],
    size: file.size,
  });
  if (error || !upload) {
    return null;
  }
  const form = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) {
    form.append(name, value);
  }
  form.append("file", file);
  const stored = await fetch(upload.url, { method: upload.method, body: form });
  if (!stored.ok) {
    return null;
  }
  const { data: done } = await api.completeUpload(upload.id);
  // Typed from the spec: a nullable profile, a nullable photo_url.
  const photo: string | null | undefined = done?.profile?.photo_url;
  return photo ?? null;
}

/** What a problem+json answer carries, from the spec's schema. */
export function problemCode(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = (error as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}
