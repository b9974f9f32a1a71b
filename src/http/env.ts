/** The Hono environment shared by the app and its handlers. */
export interface Env {
  Variables: {
    requestId: string;
    userId: string;
  };
}
