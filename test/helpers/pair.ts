/** A connected pair of tlsnet Conns over real loopback TCP. */
import { type Conn, tcp } from "../../src/index.ts";

/** A client Conn and the server-side Conn it is connected to. Close with `close()`. */
export async function tcpPair(): Promise<{
  client: Conn;
  server: Conn;
  close: () => Promise<void>;
}> {
  const ln = await tcp.listen({ addr: "127.0.0.1:0" });
  const [client, server] = await Promise.all([tcp.connect(ln.addr.toString()), ln.accept()]);
  await ln.close();
  return {
    client,
    server,
    close: async () => {
      await Promise.all([client.close(), server.close()]);
    },
  };
}

// The small utilities live in util.ts; re-exported here for the files that import them from pair.ts.
export {
  deferred,
  failOnUnhandledRejections,
  poll,
  sha256,
  since,
  sleep,
  timed,
  until,
  withTimeout,
} from "./util.ts";
