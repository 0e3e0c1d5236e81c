// The reference peer: the official JavaScript sync server setup (as automerge-repo-sync-server
// runs it): a Repo with a NodeWSServerAdapter and a filesystem storage adapter, on 127.0.0.1.
// Usage: node server.mjs <port> <data dir>. Prints "listening <port>" when ready.
import http from "node:http";
import os from "node:os";
import { WebSocketServer } from "ws";
import { Repo } from "@automerge/automerge-repo";
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";

const port = Number(process.argv[2] || 3030);
const dir = process.argv[3] || ".amrg";
const server = http.createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain" });
  res.end("reference automerge-repo sync server");
});
const wss = new WebSocketServer({ noServer: true });
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit("connection", ws, request));
});
// Same configuration as automerge-repo-sync-server: never announce documents.
new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `storage-server-${os.hostname()}`,
  sharePolicy: async () => false,
});
// The adapter attaches its connection handler only once the Repo has loaded its storage id;
// sockets accepted before that would be dropped, so listen only when it is there.
const waitForAdapter = () => {
  if (wss.listenerCount("connection") > 0) {
    server.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
  } else {
    setTimeout(waitForAdapter, 10);
  }
};
waitForAdapter();
