/*
 * inferwatch local development helper (deploy/local). Not shipped with the product.
 *
 * An Elasticsearch node built from the server jar on the class path, with the given plugin
 * classes loaded from that same class path (Elasticsearch's normal launcher wants a full
 * distribution with a modules/ folder, which Maven Central does not serve).
 * It sits in org.elasticsearch.node because the node construction hooks are package-private.
 */
package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.Collection;

public class InferwatchLocalNode extends Node {
    public InferwatchLocalNode(Environment env, Collection<Class<? extends Plugin>> plugins) {
        super(NodeConstruction.prepareConstruction(env, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment environment, PluginsLoader loader) {
                return new MockPluginsService(environment.settings(), environment, plugins);
            }
        }, true));
    }
}
