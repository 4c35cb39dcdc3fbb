import { createRouter, createWebHistory } from 'vue-router'
import { onUnauthorized } from './api'
import { loadSession, remember, session } from './session'

const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/login', name: 'login', component: () => import('./pages/LoginPage.vue'),
      meta: { open: true } },
    { path: '/', name: 'projects', component: () => import('./pages/ProjectsPage.vue') },
    { path: '/runs', name: 'runs', component: () => import('./pages/RunsPage.vue') },
    { path: '/runs/:id', name: 'run', component: () => import('./pages/RunPage.vue'),
      props: true },
    { path: '/environments', name: 'environments',
      component: () => import('./pages/EnvironmentsPage.vue') },
    { path: '/projects/:name/settings', name: 'settings',
      component: () => import('./pages/SettingsPage.vue'), props: true },
    { path: '/:rest(.*)*', name: 'missing', component: () => import('./pages/MissingPage.vue'),
      meta: { open: true } },
  ],
  scrollBehavior(to, _from, saved) {
    if (saved) return saved
    if (to.hash) return false // the log viewer scrolls to its own anchors
    return { top: 0 }
  },
})

router.beforeEach(async (to) => {
  if (to.meta.open || session.value) return true
  // The page's code is fetched while the session is asked for, not after it: on a first
  // load that is one round trip less before the page can ask for its own data.
  for (const record of to.matched) {
    const load = record.components?.default
    if (typeof load === 'function') void (load as () => Promise<unknown>)()
  }
  if (await loadSession()) return true
  return { name: 'login', query: { next: to.fullPath } }
})

// A 401 from any call: the session has ended (or never was); log in again.
onUnauthorized(() => {
  remember(null)
  const here = router.currentRoute.value
  if (here.name !== 'login') void router.push({ name: 'login', query: { next: here.fullPath } })
})

export default router
