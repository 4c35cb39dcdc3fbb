// The MongoDB stand-in for the Mongo adapters' tests: mongo-java-server's memory
// backend on 127.0.0.1:<port>. Usage: java -cp 'classes:lib/*' Launcher <port>
// It announces itself as MongoDB 5.0 (wire version 13): PyMongo 4.20 refuses servers
// below wire version 9, and mongo-java-server's own 5.0 constant still reports 8.
// No sessions, so no transactions: the adapters must not need them.
// Every command runs under one lock and replies with a copy: mongo-java-server's
// findAndModify replies with the stored document itself, encoded after the update, so
// a concurrent update can change the value a client is told (400 concurrent $inc from
// 4 clients returned 389 distinct values). Real MongoDB returns the document as of
// the update; the event store's position counter relies on it.

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.List;

public class Launcher {
    static final MongoVersion MONGO_5_0 = new MongoVersion() {
        public List<Integer> getVersionArray() { return List.of(5, 0, 0); }
        public int getWireVersion() { return 13; }
    };

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: Launcher <port>");
            System.exit(2);
        }
        int port = Integer.parseInt(args[0]);
        MongoServer server = new MongoServer(serialized(new MemoryBackend().version(MONGO_5_0)));
        server.bind("127.0.0.1", port);  // throws (exit 1) if the port is taken
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("listening on 127.0.0.1:" + port);
        System.out.flush();
        Thread.currentThread().join();
    }

    static MongoBackend serialized(MongoBackend backend) {
        Object lock = new Object();
        return (MongoBackend) Proxy.newProxyInstance(
            MongoBackend.class.getClassLoader(), new Class<?>[] {MongoBackend.class},
            (proxy, method, arguments) -> {
                synchronized (lock) {
                    try {
                        Object result = method.invoke(backend, arguments);
                        // A reply may hold the stored document itself; it is encoded
                        // after the lock is released, so hand out a copy.
                        return result instanceof Document ? ((Document) result).cloneDeeply()
                                                          : result;
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                }
            });
    }
}
