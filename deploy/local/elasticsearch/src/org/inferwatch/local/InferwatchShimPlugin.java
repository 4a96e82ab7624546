/*
 * inferwatch local development helper (deploy/local). Not shipped with the product.
 *
 * Maven Central serves the Elasticsearch server jar and its transport-netty4 module, but not the
 * other modules of the distribution. This plugin stands in for the few REST endpoints of two of
 * them that inferwatch and its clients use, built on the server's own services and response
 * classes so that the JSON matches a real cluster:
 *   rest-root:     GET / and HEAD /
 *   data-streams:  GET /_data_stream[/{name}], PUT /_data_stream/{name}, DELETE /_data_stream/{name},
 *                  GET, PUT and DELETE /_data_stream/{name}/_lifecycle
 * What it does not stand in for (retention is stored but never enforced here, because the data
 * stream lifecycle service is part of the data-streams module) is listed in deploy/local/README.md.
 */
package org.inferwatch.local;

import org.elasticsearch.Build;
import org.elasticsearch.action.ActionListener;
import org.elasticsearch.action.datastreams.GetDataStreamAction;
import org.elasticsearch.action.datastreams.lifecycle.GetDataStreamLifecycleAction;
import org.elasticsearch.action.support.master.AcknowledgedResponse;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.ClusterStateUpdateTask;
import org.elasticsearch.cluster.health.ClusterHealthStatus;
import org.elasticsearch.cluster.health.ClusterStateHealth;
import org.elasticsearch.cluster.metadata.DataStream;
import org.elasticsearch.cluster.metadata.DataStreamLifecycle;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.metadata.MetadataCreateDataStreamService;
import org.elasticsearch.cluster.metadata.MetadataDataStreamsService;
import org.elasticsearch.cluster.metadata.MetadataIndexTemplateService;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.Strings;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.regex.Regex;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.core.TimeValue;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.Index;
import org.elasticsearch.index.IndexNotFoundException;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.injection.guice.Injector;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestChannel;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.rest.action.RestToXContentListener;
import org.elasticsearch.xcontent.ToXContent;
import org.elasticsearch.xcontent.XContentBuilder;
import org.elasticsearch.xcontent.XContentParser;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Predicate;
import java.util.function.Supplier;

public class InferwatchShimPlugin extends Plugin implements ActionPlugin {
    private static volatile Injector injector;

    /** Called once the node is built, before it starts serving HTTP. */
    static void bind(Injector nodeInjector) {
        injector = nodeInjector;
    }

    private static <T> T service(Class<T> type) {
        return injector.getInstance(type);
    }

    private static TimeValue timeout(RestRequest request, String name) {
        return request.paramAsTime(name, TimeValue.timeValueSeconds(30));
    }

    private static void fail(RestChannel channel, Exception e) {
        try {
            channel.sendResponse(new RestResponse(channel, e));
        } catch (IOException io) {
            io.addSuppressed(e);
            throw new RuntimeException(io);
        }
    }

    private static List<DataStream> matching(ClusterState state, String[] names, boolean failIfMissing) {
        Map<String, DataStream> all = state.metadata().dataStreams();
        Set<DataStream> out = new LinkedHashSet<>();
        if (names.length == 0) {
            names = new String[] { "*" };
        }
        for (String name : names) {
            if (name.equals("_all") || Regex.isSimpleMatchPattern(name)) {
                String pattern = name.equals("_all") ? "*" : name;
                all.values().stream().filter(ds -> Regex.simpleMatch(pattern, ds.getName()))
                    .filter(ds -> ds.isHidden() == false || pattern.startsWith(".")).forEach(out::add);
            } else if (all.containsKey(name)) {
                out.add(all.get(name));
            } else if (failIfMissing) {
                throw new IndexNotFoundException(name);
            }
        }
        List<DataStream> sorted = new ArrayList<>(out);
        sorted.sort((a, b) -> a.getName().compareTo(b.getName()));
        return sorted;
    }

    @Override
    public Collection<RestHandler> getRestHandlers(Settings settings, NamedWriteableRegistry namedWriteableRegistry,
            RestController restController, ClusterSettings clusterSettings, IndexScopedSettings indexScopedSettings,
            SettingsFilter settingsFilter, IndexNameExpressionResolver indexNameExpressionResolver,
            Supplier<DiscoveryNodes> nodesInCluster, Predicate<NodeFeature> clusterSupportsFeature) {
        return List.of(new RootHandler(), new GetDataStreamsHandler(), new PutDataStreamHandler(),
            new DeleteDataStreamHandler(), new GetLifecycleHandler(), new PutLifecycleHandler(),
            new DeleteLifecycleHandler());
    }

    /** GET / and HEAD /, as the rest-root module answers them. */
    static final class RootHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_main_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        public boolean canTripCircuitBreaker() {
            return false;
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            return channel -> {
                ClusterService clusterService = service(ClusterService.class);
                ClusterState state = clusterService.state();
                Build build = Build.current();
                XContentBuilder b = channel.newBuilder();
                b.startObject();
                b.field("name", clusterService.getNodeName());
                b.field("cluster_name", clusterService.getClusterName().value());
                b.field("cluster_uuid", state.metadata().clusterUUID());
                b.startObject("version")
                    .field("number", build.qualifiedVersion())
                    .field("build_flavor", build.flavor())
                    .field("build_type", build.type().displayName())
                    .field("build_hash", build.hash())
                    .field("build_date", build.date())
                    .field("build_snapshot", build.isSnapshot())
                    .field("lucene_version", IndexVersion.current().luceneVersion().toString())
                    .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                    .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                    .endObject();
                b.field("tagline", "You Know, for Search");
                b.endObject();
                channel.sendResponse(new RestResponse(RestStatus.OK, b));
            };
        }
    }

    /** GET /_data_stream and GET /_data_stream/{name}, in the data-streams module's format. */
    static final class GetDataStreamsHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_get_data_streams_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/_data_stream"),
                new Route(RestRequest.Method.GET, "/_data_stream/{name}"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            String[] names = Strings.splitStringByCommaToArray(request.param("name"));
            request.param("expand_wildcards");
            request.param("include_defaults");
            request.param("verbose");
            timeout(request, "master_timeout");
            return channel -> {
                try {
                    ClusterState state = service(ClusterService.class).state();
                    List<GetDataStreamAction.Response.DataStreamInfo> infos = new ArrayList<>();
                    for (DataStream ds : matching(state, names, true)) {
                        DataStreamLifecycle lifecycle = ds.getDataLifecycle();
                        boolean managed = lifecycle != null && lifecycle.enabled();
                        GetDataStreamAction.Response.ManagedBy managedBy = managed
                            ? GetDataStreamAction.Response.ManagedBy.LIFECYCLE
                            : GetDataStreamAction.Response.ManagedBy.UNMANAGED;
                        Map<Index, GetDataStreamAction.Response.IndexProperties> props = new HashMap<>();
                        String[] indexNames = new String[ds.getIndices().size()];
                        int i = 0;
                        for (Index index : ds.getIndices()) {
                            indexNames[i++] = index.getName();
                            props.put(index, new GetDataStreamAction.Response.IndexProperties(false, null, managedBy, "standard"));
                        }
                        ClusterHealthStatus health = indexNames.length == 0
                            ? ClusterHealthStatus.GREEN
                            : new ClusterStateHealth(state, indexNames).getStatus();
                        String template = MetadataIndexTemplateService.findV2Template(state.metadata(), ds.getName(), ds.isHidden());
                        infos.add(new GetDataStreamAction.Response.DataStreamInfo(ds, false, health, template, null, null, props,
                            false, null, "standard"));
                    }
                    GetDataStreamAction.Response response = new GetDataStreamAction.Response(infos);
                    XContentBuilder b = channel.newBuilder();
                    response.toXContent(b, ToXContent.EMPTY_PARAMS);
                    channel.sendResponse(new RestResponse(RestStatus.OK, b));
                } catch (Exception e) {
                    fail(channel, e);
                }
            };
        }
    }

    /** PUT /_data_stream/{name}: needs a matching index template with "data_stream": {}. */
    static final class PutDataStreamHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_create_data_stream_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.PUT, "/_data_stream/{name}"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            String name = request.param("name");
            TimeValue master = timeout(request, "master_timeout");
            TimeValue ack = timeout(request, "timeout");
            return channel -> service(MetadataCreateDataStreamService.class).createDataStream(
                new MetadataCreateDataStreamService.CreateDataStreamClusterStateUpdateRequest(name, null, master, ack, true),
                new RestToXContentListener<>(channel));
        }
    }

    /** DELETE /_data_stream/{name}: removes the data streams and their backing indices. */
    static final class DeleteDataStreamHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_delete_data_stream_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.DELETE, "/_data_stream/{name}"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            String[] names = Strings.splitStringByCommaToArray(request.param("name"));
            request.param("expand_wildcards");
            timeout(request, "master_timeout");
            timeout(request, "timeout");
            return channel -> {
                ClusterService clusterService = service(ClusterService.class);
                try {
                    matching(clusterService.state(), names, true);
                } catch (Exception e) {
                    fail(channel, e);
                    return;
                }
                ActionListener<AcknowledgedResponse> listener = new RestToXContentListener<>(channel);
                clusterService.submitUnbatchedStateUpdateTask("inferwatch-local-delete-data-stream", new ClusterStateUpdateTask() {
                    @Override
                    public ClusterState execute(ClusterState current) {
                        Set<DataStream> found = new LinkedHashSet<>(matching(current, names, true));
                        if (found.isEmpty()) {
                            return current;
                        }
                        return MetadataDataStreamsService.deleteDataStreams(current, found, clusterService.getSettings());
                    }

                    @Override
                    public void onFailure(Exception e) {
                        listener.onFailure(e);
                    }

                    @Override
                    public void clusterStateProcessed(ClusterState before, ClusterState after) {
                        listener.onResponse(AcknowledgedResponse.TRUE);
                    }
                });
            };
        }
    }

    /** PUT /_data_stream/{name}/_lifecycle with {"data_retention": "7d"} and the like. */
    static final class PutLifecycleHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_put_data_lifecycle_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.PUT, "/_data_stream/{name}/_lifecycle"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client)
                throws IOException {
            String[] names = Strings.splitStringByCommaToArray(request.param("name"));
            request.param("expand_wildcards");
            TimeValue master = timeout(request, "master_timeout");
            TimeValue ack = timeout(request, "timeout");
            DataStreamLifecycle lifecycle;
            try (XContentParser parser = request.contentParser()) {
                lifecycle = DataStreamLifecycle.dataLifecycleFromXContent(parser);
            }
            return channel -> {
                List<String> resolved = new ArrayList<>();
                try {
                    for (DataStream ds : matching(service(ClusterService.class).state(), names, true)) {
                        resolved.add(ds.getName());
                    }
                } catch (Exception e) {
                    fail(channel, e);
                    return;
                }
                service(MetadataDataStreamsService.class).setLifecycle(resolved, lifecycle, ack, master,
                    new RestToXContentListener<>(channel));
            };
        }
    }

    /** GET /_data_stream/{name}/_lifecycle. */
    static final class GetLifecycleHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_get_data_lifecycle_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/_data_stream/{name}/_lifecycle"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            String[] names = Strings.splitStringByCommaToArray(request.param("name"));
            request.param("expand_wildcards");
            request.param("include_defaults");
            timeout(request, "master_timeout");
            return channel -> {
                try {
                    List<GetDataStreamLifecycleAction.Response.DataStreamLifecycle> items = new ArrayList<>();
                    for (DataStream ds : matching(service(ClusterService.class).state(), names, true)) {
                        items.add(new GetDataStreamLifecycleAction.Response.DataStreamLifecycle(ds.getName(),
                            ds.getDataLifecycle(), ds.isSystem()));
                    }
                    GetDataStreamLifecycleAction.Response response = new GetDataStreamLifecycleAction.Response(items);
                    XContentBuilder b = channel.newBuilder();
                    for (Iterator<? extends ToXContent> it = response.toXContentChunked(ToXContent.EMPTY_PARAMS); it.hasNext();) {
                        it.next().toXContent(b, ToXContent.EMPTY_PARAMS);
                    }
                    channel.sendResponse(new RestResponse(RestStatus.OK, b));
                } catch (Exception e) {
                    fail(channel, e);
                }
            };
        }
    }

    /** DELETE /_data_stream/{name}/_lifecycle. */
    static final class DeleteLifecycleHandler extends BaseRestHandler {
        @Override
        public String getName() {
            return "inferwatch_local_delete_data_lifecycle_action";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.DELETE, "/_data_stream/{name}/_lifecycle"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, org.elasticsearch.client.internal.node.NodeClient client) {
            String[] names = Strings.splitStringByCommaToArray(request.param("name"));
            request.param("expand_wildcards");
            TimeValue master = timeout(request, "master_timeout");
            TimeValue ack = timeout(request, "timeout");
            return channel -> {
                List<String> resolved = new ArrayList<>();
                try {
                    for (DataStream ds : matching(service(ClusterService.class).state(), names, true)) {
                        resolved.add(ds.getName());
                    }
                } catch (Exception e) {
                    fail(channel, e);
                    return;
                }
                service(MetadataDataStreamsService.class).removeLifecycle(resolved, ack, master,
                    new RestToXContentListener<>(channel));
            };
        }
    }
}
