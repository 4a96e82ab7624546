/*
 * inferwatch local development helper (deploy/local). Not shipped with the product.
 *
 * Starts one Elasticsearch node on loopback: java ... org.inferwatch.local.EsMain HOME HTTP_PORT CLUSTER_NAME
 * HOME gets config/, data/ and logs/. Writes HOME/http.port once HTTP is bound.
 */
package org.inferwatch.local;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.node.InferwatchLocalNode;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

public class EsMain {
    private static final String LOG_CONFIG = String.join("\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n",
        "rootLogger.level = info",
        "rootLogger.appenderRef.console.ref = console",
        // deprecation warnings reach the client as HTTP Warning headers; keep the log quiet
        "logger.deprecation.name = org.elasticsearch.deprecation",
        "logger.deprecation.level = error",
        "");

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: EsMain HOME HTTP_PORT [CLUSTER_NAME]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        int httpPort = Integer.parseInt(args[1]);
        String clusterName = args.length > 2 ? args[2] : "inferwatch-local";
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.deleteIfExists(home.resolve("http.port"));
        Files.writeString(config.resolve("log4j2.properties"), LOG_CONFIG, StandardCharsets.UTF_8);

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", clusterName)
            .put("node.name", "inferwatch-es-0")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            // the transport layer is unused by a single node, but it must bind somewhere
            .put("transport.port", (httpPort + 100) + "-" + (httpPort + 199))
            .put("discovery.type", "single-node")
            // a nearly full disk on a developer machine must not turn indices read-only
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.destructive_requires_name", false)
            .build();

        LogConfigurator.configureESLogging();
        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> "inferwatch-es-0");
        LogConfigurator.configure(env, true);

        List<Class<? extends Plugin>> plugins = List.of(Netty4Plugin.class, InferwatchShimPlugin.class);
        InferwatchLocalNode node = new InferwatchLocalNode(env, plugins);
        InferwatchShimPlugin.bind(node.injector());
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, java.util.concurrent.TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
            stopped.countDown();
        }, "inferwatch-es-shutdown"));
        node.start();
        HttpServerTransport http = node.injector().getInstance(HttpServerTransport.class);
        String bound = http.boundAddress().publishAddress().toString();
        Files.writeString(home.resolve("http.port"), bound + "\n", StandardCharsets.UTF_8);
        System.out.println("inferwatch-local: elasticsearch " + org.elasticsearch.Build.current().version()
            + " listening on http://" + bound);
        System.out.flush();
        stopped.await();
    }
}
